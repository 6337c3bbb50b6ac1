# Data tools: the synthetic generator and the real-dataset converters.
add_executable(din_gen ${CMAKE_CURRENT_LIST_DIR}/din_gen.cc)
target_link_libraries(din_gen PRIVATE din_data)

if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/din_convert.cc)
  add_executable(din_convert ${CMAKE_CURRENT_LIST_DIR}/din_convert.cc)
  target_link_libraries(din_convert PRIVATE din_data)
endif()
