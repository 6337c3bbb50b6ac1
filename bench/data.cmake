# reader_bench: din-tsv parse throughput (rows/s, MB/s, one thread) against a raw
# read+memchr line scan of the same file; one JSON line
# (`reader_bench [--input FILE] [--rows N] [--batch N] [--repeat N] [--partitions V]`;
# with --partitions also the StepReader of V partitions on one worker, same file, same run).
add_executable(reader_bench ${CMAKE_CURRENT_LIST_DIR}/reader_bench.cc)
target_link_libraries(reader_bench PRIVATE din_data)
