# din_dump: inspect, look up and convert embedding dumps (common/dump_format.h).
add_executable(din_dump ${CMAKE_CURRENT_LIST_DIR}/din_dump.cc)
target_link_libraries(din_dump PRIVATE din_worker_lib din_trainer)
