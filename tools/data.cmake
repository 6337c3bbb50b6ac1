# Data tools: the synthetic generator and the real-dataset converters.
add_executable(din_gen ${CMAKE_CURRENT_LIST_DIR}/din_gen.cc)
target_link_libraries(din_gen PRIVATE din_data)

# JSON / Python-literal values, one per line of the Amazon files (tools/literal_parser.h).
add_library(din_literal_parser STATIC ${CMAKE_CURRENT_LIST_DIR}/literal_parser.cc)
target_link_libraries(din_literal_parser PUBLIC din_base)

add_executable(din_convert ${CMAKE_CURRENT_LIST_DIR}/din_convert.cc)
target_link_libraries(din_convert PRIVATE din_data din_literal_parser)
