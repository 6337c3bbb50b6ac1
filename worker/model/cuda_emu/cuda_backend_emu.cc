// The CUDA backend (cuda_backend.cu) compiled as C++ over the CUDA emulation
// (cuda_emu.h): <cuda_runtime.h> and <cublas_v2.h> are the emulation's headers here.
#include "worker/model/cuda_backend.cu"  // NOLINT(bugprone-suspicious-include)
