// The CUDA emulation (worker/model/cuda_emu) refuses what a GPU refuses, catches memory
// misuse, runs barrier kernels with block semantics (a missing __syncthreads shows) and
// has a cuBLAS-conformant SGEMM; and the CUDA backend's barrier kernels run on it. Under
// ThreadSanitizer (ctest label tsan) the barrier kernels run on real threads.
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/worker/model/model_test_util.h"
#include "worker/model/backend.h"
#include "worker/model/cuda_emu/cublas_v2.h"
#include "worker/model/cuda_emu/cuda_emu.h"

#if defined(__SANITIZE_THREAD__)
#define DIN_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DIN_TEST_TSAN 1
#endif
#endif

namespace {

using din::cuda_emu::LaunchKind;

#define LAUNCH(kernel, grid, block, shmem, ...) \
  DIN_CUDA_EMU_LAUNCH_IMPL(LaunchKind::kLoop, kernel, grid, block, shmem, nullptr, __VA_ARGS__)
#define LAUNCH_SYNC(kernel, grid, block, ...) \
  DIN_CUDA_EMU_LAUNCH_IMPL(LaunchKind::kBarrier, kernel, grid, block, 0, nullptr, __VA_ARGS__)

template <typename T>
T* DeviceAlloc(size_t n) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return p;
}

__global__ void FillKernel(float* out, int n, float v) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = v + i;
}

// One block sums in[0, n) by a shared-memory tree; `sync` false drops the barrier inside
// the tree (the classic bug).
__global__ void BlockSumKernel(const float* in, int n, float* out, bool sync) {
  __shared__ float sh[256];
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += in[i];
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    if (sync) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

__global__ void LoopKernelWithBarrier(float* out) {
  __syncthreads();
  out[0] = 1.0f;
}

TEST(CudaEmuTest, RefusesWhatAGpuRefuses) {
  float* d = DeviceAlloc<float>(16);
  ASSERT_EQ(cudaMemset(d, 0, 16 * sizeof(float)), cudaSuccess);
  const uint64_t before = din::cuda_emu::LaunchCount();
  struct Bad {
    dim3 grid, block;
    size_t shmem;
  };
  for (const Bad& b :
       {Bad{dim3(0), dim3(32), 0}, Bad{dim3(1), dim3(0), 0}, Bad{dim3(1), dim3(1025), 0},
        Bad{dim3(1), dim3(32, 33), 0}, Bad{dim3(1, 65536), dim3(32), 0},
        Bad{dim3(1, 1, 65536), dim3(32), 0}, Bad{dim3(1), dim3(32), 48 * 1024 + 1}}) {
    LAUNCH(FillKernel, b.grid, b.block, b.shmem, d, 16, 5.0f);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration)
        << b.grid.x << "," << b.grid.y << "," << b.grid.z << " / " << b.block.x << "," << b.block.y;
  }
  EXPECT_EQ(din::cuda_emu::LaunchCount(), before) << "no refused kernel ran";
  float h[16];
  ASSERT_EQ(cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) EXPECT_EQ(v, 0.0f);
  // The limits themselves are fine.
  LAUNCH(FillKernel, dim3(1, 65535), dim3(1), 0, d, 16, 5.0f);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  LAUNCH(FillKernel, dim3(1), dim3(1024), 48 * 1024, d, 16, 5.0f);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h[15], 20.0f);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(CudaEmuTest, CatchesMemoryMisuse) {
  float* d = DeviceAlloc<float>(8);
  std::vector<float> h(8, 1.0f);
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  // Wrong direction, either way round.
  EXPECT_EQ(cudaMemcpy(d, h.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost),
            cudaErrorInvalidValue);
  EXPECT_NE(std::string(cudaGetErrorString(cudaErrorInvalidValue)).find("DeviceToHost"),
            std::string::npos);
  EXPECT_EQ(cudaMemcpy(h.data(), d, 8 * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(h.data(), h.data() + 4, 4 * sizeof(float), cudaMemcpyDeviceToDevice),
            cudaErrorInvalidValue);
  // Past the end of the allocation; into a null host pointer.
  EXPECT_EQ(cudaMemcpy(d + 4, h.data(), 5 * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(nullptr, d, sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(h.data(), 0, sizeof(float)), cudaErrorInvalidValue);
  // A host pointer as a kernel argument: refused, the kernel does not run.
  const uint64_t before = din::cuda_emu::LaunchCount();
  LAUNCH(FillKernel, 1, 32, 0, h.data(), 8, 5.0f);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(din::cuda_emu::LaunchCount(), before);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(cudaFree(h.data()), cudaErrorInvalidDevicePointer);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevicePointer);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the error is reported once";
}

TEST(CudaEmuTest, UninitialisedDeviceMemoryReadsAsNan) {
  float* d = DeviceAlloc<float>(4);
  float h[4];
  ASSERT_EQ(cudaMemcpy(h, d, sizeof(h), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : h) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

float BlockSum(const std::vector<float>& v, bool sync) {
  float* in = DeviceAlloc<float>(v.size());
  float* out = DeviceAlloc<float>(1);
  EXPECT_EQ(cudaMemcpy(in, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  LAUNCH_SYNC(BlockSumKernel, 1, 256, in, static_cast<int>(v.size()), out, sync);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  float r = 0.0f;
  EXPECT_EQ(cudaMemcpy(&r, out, sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(in);
  cudaFree(out);
  return r;
}

TEST(CudaEmuTest, BarrierKernelsHaveBlockSemantics) {
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 7);
  double expect = 0;
  for (float x : v) expect += x;
  EXPECT_EQ(BlockSum(v, true), expect);
#if !defined(DIN_TEST_TSAN)
  // Serial schedule: thread 0 runs ahead through the tree and reads partial sums that
  // are not there yet, so the dropped barrier gives a wrong total, every time.
  EXPECT_NE(BlockSum(v, false), expect);
  // The concurrent schedule (real threads) gives the right total with the barrier.
  setenv("DIN_CUDA_EMU_SCHEDULE", "concurrent", 1);
  EXPECT_EQ(BlockSum(v, true), expect);
  unsetenv("DIN_CUDA_EMU_SCHEDULE");
#endif
}

TEST(CudaEmuTest, BarrierInLoopKernelStops) {
#if defined(DIN_TEST_TSAN)
  GTEST_SKIP() << "a death test forks; not under ThreadSanitizer";
#endif
  float* d = DeviceAlloc<float>(1);
  EXPECT_DEATH(LAUNCH(LoopKernelWithBarrier, 1, 32, 0, d), "launched as a loop kernel");
  cudaFree(d);
}

// Column-major reference with op and leading dimensions.
TEST(CudaEmuTest, SgemmHonoursOpAndLeadingDimensions) {
  cublasHandle_t h = nullptr;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> val(-1, 1);
  const int m = 5, n = 4, k = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
      const int lda = ar + 2, ldb = br + 1, ldc = m + 3;
      std::vector<float> a(lda * ac), b(ldb * bc), c(ldc * n, 0.5f);
      for (float& x : a) x = val(rng);
      for (float& x : b) x = val(rng);
      float* da = DeviceAlloc<float>(a.size());
      float* db = DeviceAlloc<float>(b.size());
      float* dc = DeviceAlloc<float>(c.size());
      cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(dc, c.data(), c.size() * 4, cudaMemcpyHostToDevice);
      const float alpha = 2.0f, beta = 0.25f;
      ASSERT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                            k, &alpha, da, lda, db, ldb, &beta, dc, ldc),
                CUBLAS_STATUS_SUCCESS);
      std::vector<float> got(c.size());
      cudaMemcpy(got.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost);
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < ldc; ++i) {
          if (i >= m) {
            EXPECT_EQ(got[i + j * ldc], 0.5f) << "padding rows of C untouched";
            continue;
          }
          double s = 0;
          for (int l = 0; l < k; ++l)
            s += double(ta ? a[l + i * lda] : a[i + l * lda]) *
                 double(tb ? b[j + l * ldb] : b[l + j * ldb]);
          EXPECT_NEAR(got[i + j * ldc], alpha * s + beta * 0.5, 1e-5)
              << "ta " << ta << " tb " << tb << " (" << i << "," << j << ")";
        }
      // A leading dimension shorter than the rows, or a range past the allocation.
      EXPECT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                            k, &alpha, da, ar - 1, db, ldb, &beta, dc, ldc),
                CUBLAS_STATUS_INVALID_VALUE);
      EXPECT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m,
                            n + 1, k, &alpha, da, lda, db, ldb, &beta, dc, ldc),
                CUBLAS_STATUS_INVALID_VALUE);
      EXPECT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                            k, &alpha, a.data(), lda, db, ldb, &beta, dc, ldc),
                CUBLAS_STATUS_INVALID_VALUE);
      EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "cuBLAS errors are not runtime errors";
      // beta = 0 never reads C: fresh device memory reads as NaN, the result has none.
      float* dn = DeviceAlloc<float>(c.size());
      const float zero = 0.0f;
      ASSERT_EQ(cublasSgemm(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                            k, &alpha, da, lda, db, ldb, &zero, dn, ldc),
                CUBLAS_STATUS_SUCCESS);
      cudaMemcpy(got.data(), dn, c.size() * 4, cudaMemcpyDeviceToHost);
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) EXPECT_FALSE(std::isnan(got[i + j * ldc]));
      cudaFree(da);
      cudaFree(db);
      cudaFree(dc);
      cudaFree(dn);
    }
  cublasDestroy(h);
}

// The CUDA backend on the emulation against the CPU backend, briefly; under
// ThreadSanitizer its barrier kernels (column reductions, the loss) run on real threads.
TEST(CudaEmuTest, BackendRunsOnTheEmulation) {
  using din::model::test::MakeProblem;
  using din::model::test::ProblemOptions;
  ProblemOptions o;
  o.batch = 300;  // more than one reduction chunk
  auto pb = MakeProblem(o);
  auto cpu = din::model::CreateBackend("cpu", pb.config, pb.dims).value();
  auto cuda = din::model::CreateBackend("cuda", pb.config, pb.dims);
  ASSERT_TRUE(cuda.ok()) << cuda.status().ToString();
  EXPECT_EQ((*cuda)->name(), "cuda");
  const uint64_t before = din::cuda_emu::LaunchCount();
  auto lc = cpu->TrainStep(pb.input, pb.labels);
  auto lg = (*cuda)->TrainStep(pb.input, pb.labels);
  ASSERT_TRUE(lc.ok()) << lc.status().ToString();
  ASSERT_TRUE(lg.ok()) << lg.status().ToString();
  EXPECT_GT(din::cuda_emu::LaunchCount(), before);
  EXPECT_NEAR(*lg, *lc, 1e-4);
  for (size_t i = 0; i < cpu->grads().size(); ++i)
    EXPECT_NEAR((*cuda)->grads()[i], cpu->grads()[i], 1e-4) << i;
}

// A kernel that fails is named in the backend's error, and the backend recovers.
TEST(CudaEmuTest, FailingKernelIsNamed) {
  using din::model::test::MakeProblem;
  using din::model::test::ProblemOptions;
  auto pb = MakeProblem(ProblemOptions{});
  auto cuda = din::model::CreateBackend("cuda", pb.config, pb.dims).value();
  setenv("DIN_CUDA_EMU_FAIL_LAUNCH", "DiceForwardKernel", 1);
  auto failed = cuda->TrainStep(pb.input, pb.labels);
  unsetenv("DIN_CUDA_EMU_FAIL_LAUNCH");
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("DiceForwardKernel"), std::string::npos)
      << failed.status().ToString();
  EXPECT_TRUE(cuda->TrainStep(pb.input, pb.labels).ok());
}

}  // namespace
