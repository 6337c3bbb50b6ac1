// Built when CUDA is off: the CUDA backend is absent and asking for it is an error.
#include <memory>

#include "worker/model/cuda_backend.h"

namespace din::model {

int CudaDeviceCount() { return 0; }

Result<std::unique_ptr<ModelBackend>> CreateCudaBackend(ModelLayout /*layout*/, int /*device*/) {
  return Status::Unavailable(
      "the CUDA backend was requested but this build has no CUDA support (configure with "
      "-DDIN_CUDA=ON on a machine with nvcc)");
}

Result<double> CudaSgemmPeakGflops(int /*device*/) {
  return Status::Unavailable("this build has no CUDA support");
}

}  // namespace din::model
