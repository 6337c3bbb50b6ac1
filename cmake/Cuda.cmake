# DIN_CUDA: AUTO enables the CUDA backend when nvcc is found (also at /usr/local/cuda),
# ON requires it, OFF skips it. Sets DIN_CUDA_ENABLED and, when on, the CUDA language
# for sm_90 (H200) plus PTX so newer devices can JIT.
set(DIN_CUDA_ENABLED OFF)
if(NOT DIN_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)  # "90" = sm_90 SASS + compute_90 PTX
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(DIN_CUDA_ENABLED ON)
  elseif(DIN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "DIN_CUDA=ON but no CUDA compiler was found (looked for nvcc)")
  endif()
endif()
