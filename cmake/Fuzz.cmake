# DIN_FUZZ=ON builds the libFuzzer harnesses of tests/fuzz. It needs clang: every target
# gets coverage instrumentation (-fsanitize=fuzzer-no-link) plus ASan and UBSan, and
# the harnesses link libFuzzer's main. Use a build tree of its own:
#   CC=clang CXX=clang++ cmake -B build-fuzz -DDIN_FUZZ=ON -DDIN_CUDA=OFF ...
if(DIN_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "DIN_FUZZ needs clang (libFuzzer); configure with CXX=clang++ CC=clang")
  endif()
  if(DIN_SANITIZE)
    message(FATAL_ERROR "DIN_FUZZ brings its own sanitizers (address, undefined); unset DIN_SANITIZE")
  endif()
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link,address,undefined>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=all>)
  add_link_options(-fsanitize=address,undefined)
endif()
