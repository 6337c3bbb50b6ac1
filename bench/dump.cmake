# dump_bench: an embedding dump of one 10M-row shard against the disk's sequential
# write speed (bench/run.sh dump_bench [--rows=N] [--dir=PATH]).
add_executable(dump_bench ${CMAKE_CURRENT_LIST_DIR}/dump_bench.cc)
target_link_libraries(dump_bench PRIVATE din_ps_lib)
