# din_dump: inspect, look up and convert embedding dumps (common/dump_format.h).
add_executable(din_dump ${CMAKE_CURRENT_LIST_DIR}/din_dump.cc)
target_link_libraries(din_dump PRIVATE din_worker_lib din_trainer)

# din_plan: per server and table, the rows, bytes and shards a job will hold, against
# each server's memory budget (exits 1 when a server or a shard does not fit).
add_executable(din_plan ${CMAKE_CURRENT_LIST_DIR}/din_plan.cc)
target_link_libraries(din_plan PRIVATE din_ps_lib din_worker_lib)
