# din_keys: creates a job's CURVE key files (common/net/curve_keys.h).
add_executable(din_keys ${CMAKE_CURRENT_LIST_DIR}/din_keys.cc)
target_link_libraries(din_keys PRIVATE din_net)
