// CUDA backend against the CPU backend; skipped without a usable device.
#include <gtest/gtest.h>

#include "worker/model/backend.h"

namespace din::model {
namespace {

TEST(CudaBackendTest, Placeholder) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
}

}  // namespace
}  // namespace din::model
