# model_bench: DIN forward+backward throughput on the standard configuration, one JSON
# line per run (`model_bench [--backend cpu|cuda] [--batch N] [--threads N] [--seconds S]`).
add_executable(model_bench ${CMAKE_CURRENT_SOURCE_DIR}/model_bench.cc)
find_package(OpenMP REQUIRED COMPONENTS CXX)
target_link_libraries(model_bench PRIVATE din_model din_model_cxx_flags Eigen3::Eigen
                      OpenMP::OpenMP_CXX)
