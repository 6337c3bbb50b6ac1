# DIN_SANITIZE is a list such as "address;undefined" or "thread"; each entry becomes
# -fsanitize=<entry> on every target compiled after this file is included.
if(DIN_SANITIZE)
  foreach(san IN LISTS DIN_SANITIZE)
    if(NOT san MATCHES "^(address|undefined|thread|leak)$")
      message(FATAL_ERROR "DIN_SANITIZE: unknown sanitizer '${san}'")
    endif()
  endforeach()
  if("thread" IN_LIST DIN_SANITIZE AND "address" IN_LIST DIN_SANITIZE)
    message(FATAL_ERROR "DIN_SANITIZE: 'thread' cannot be combined with 'address'")
  endif()
  list(JOIN DIN_SANITIZE "," din_san_joined)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${din_san_joined}>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=all>)
  add_link_options(-fsanitize=${din_san_joined})
endif()
