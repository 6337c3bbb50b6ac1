add_executable(table_bench ${CMAKE_CURRENT_LIST_DIR}/table_bench.cc)
target_link_libraries(table_bench PRIVATE din_ps_lib)

add_executable(ps_bench ${CMAKE_CURRENT_LIST_DIR}/ps_bench.cc)
target_link_libraries(ps_bench PRIVATE din_worker_lib)

add_executable(evict_bench ${CMAKE_CURRENT_LIST_DIR}/evict_bench.cc)
target_link_libraries(evict_bench PRIVATE din_ps_lib)
