// The CUDA backend's entry points. Implemented in cuda_backend.cu when the build has
// CUDA (DIN_CUDA_ENABLED), otherwise by cuda_stub.cc, which reports that CUDA is not
// built in.
#pragma once

#include <memory>

#include "common/status.h"
#include "worker/model/backend.h"

namespace din::model {

// A CUDA backend on `device`; an error Status when no usable device exists.
Result<std::unique_ptr<ModelBackend>> CreateCudaBackend(ModelLayout layout, int device);

// Sustained cuBLAS SGEMM rate on `device` (GFLOP/s), the GPU's practical fp32 peak.
Result<double> CudaSgemmPeakGflops(int device);

}  // namespace din::model
