// The CUDA backend: cuBLAS for the GEMMs, kernels of its own for gathering embedding
// rows, building the activation-unit input, Dice (forward/backward with batch
// reductions), pooling, the top input and the scatter-add of embedding gradients. The
// per-element math is model_math.h, shared with the CPU backend.
//
// Host memory stays the source of truth for the dense parameters and the Dice running
// statistics (the trainer's all-reduce and optimizer work there): every call uploads
// them and downloads what changed. Device buffers grow to the largest batch seen and
// are reused.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "worker/model/cuda_backend.h"
#include "worker/model/model_math.h"

namespace din::model {
namespace {

using math::Act;

#define DIN_CUDA_RETURN_IF_ERROR(expr)                                                        \
  do {                                                                                        \
    const cudaError_t din_cuda_err_ = (expr);                                                 \
    if (din_cuda_err_ != cudaSuccess)                                                         \
      return Status::Internal(std::string(#expr) + ": " + cudaGetErrorString(din_cuda_err_)); \
  } while (0)

#define DIN_CUBLAS_RETURN_IF_ERROR(expr)                                         \
  do {                                                                           \
    const cublasStatus_t din_cublas_st_ = (expr);                                \
    if (din_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                 \
      return Status::Internal(std::string(#expr) + ": cuBLAS status " +          \
                              std::to_string(static_cast<int>(din_cublas_st_))); \
  } while (0)

// Kernel launches. DIN_LAUNCH for kernels whose threads do not meet, DIN_LAUNCH_SYNC for
// those that call __syncthreads (the emulation runs a block's threads concurrently only
// for these). Used in member functions returning Status: a launch error returns at once,
// naming the kernel; with DIN_CUDA_DEBUG=1 every launch is also synchronised and checked,
// so a kernel that faults is named too.
#if defined(DIN_CUDA_EMULATION)
#define DIN_LAUNCH_IMPL(sync, kernel, grid, block, ...)                                          \
  DIN_CUDA_EMU_LAUNCH_IMPL(                                                                      \
      sync ? ::din::cuda_emu::LaunchKind::kBarrier : ::din::cuda_emu::LaunchKind::kLoop, kernel, \
      grid, block, 0, stream_, __VA_ARGS__)
#else
#define DIN_LAUNCH_IMPL(sync, kernel, grid, block, ...) \
  kernel<<<grid, block, 0, stream_>>>(__VA_ARGS__)
#endif
#define DIN_LAUNCH(kernel, grid, block, ...)                  \
  do {                                                        \
    DIN_LAUNCH_IMPL(false, kernel, grid, block, __VA_ARGS__); \
    DIN_RETURN_IF_ERROR(AfterLaunch(#kernel));                \
  } while (0)
#define DIN_LAUNCH_SYNC(kernel, grid, block, ...)            \
  do {                                                       \
    DIN_LAUNCH_IMPL(true, kernel, grid, block, __VA_ARGS__); \
    DIN_RETURN_IF_ERROR(AfterLaunch(#kernel));               \
  } while (0)

bool CudaDebug() {
  static const bool on = [] {
    const char* v = std::getenv("DIN_CUDA_DEBUG");
    return v != nullptr && std::strcmp(v, "0") != 0 && *v != '\0';
  }();
  return on;
}

constexpr int kThreads = 256;
constexpr int kColTile = 32;
constexpr int kRowThreads = 8;
constexpr int kRowsPerChunk = 256;

// Element kernels loop grid-stride, so any size fits in a grid of at most kMaxBlocks.
constexpr size_t kMaxBlocks = 65535;
// Column reductions: blocks along the rows (grid.y ≤ 65535), each looping over chunks.
constexpr int kMaxChunkBlocks = 256;

int Blocks(size_t n) {
  return static_cast<int>(std::min((n + kThreads - 1) / kThreads, kMaxBlocks));
}
bool HasAlpha(Act act) { return act == Act::kDice || act == Act::kPRelu; }

// A device array that grows to the largest size requested and is never shrunk.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  Status Reserve(size_t n) {
    if (n <= capacity_) return Status::Ok();
    const size_t grown = std::max(n, capacity_ + capacity_ / 2);
    if (ptr_ != nullptr) {
      // Work queued on any stream may still read the old block; growth is rare.
      DIN_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
      cudaFree(ptr_);
    }
    ptr_ = nullptr;
    capacity_ = 0;
    DIN_CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, grown * sizeof(T)));
    capacity_ = grown;
    return Status::Ok();
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t capacity_ = 0;
};

// Page-locked host memory for staging copies: cudaMemcpyAsync from pageable memory
// copies synchronously through a driver buffer; from pinned memory it is one DMA that
// overlaps with the host. Regions are handed out in order until Reset, which the caller
// calls once the stream has synchronised; a block outgrown meanwhile stays allocated
// until then, since queued copies (and pending host copies) still use it.
class PinnedStaging {
 public:
  PinnedStaging() = default;
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;
  ~PinnedStaging() {
    Reset();
    if (ptr_ != nullptr) cudaFreeHost(ptr_);
  }
  void Reset() {
    for (char* p : retired_) cudaFreeHost(p);
    retired_.clear();
    used_ = 0;
  }
  // A region of `bytes` (256-aligned), valid until the next Reset.
  Status Take(size_t bytes, char** region) {
    const size_t rounded = (bytes + 255) / 256 * 256;
    if (used_ + rounded > capacity_) {
      if (ptr_ != nullptr) retired_.push_back(ptr_);
      ptr_ = nullptr;
      const size_t grown = std::max(rounded, 2 * capacity_);
      capacity_ = 0;
      used_ = 0;
      DIN_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&ptr_), grown));
      capacity_ = grown;
    }
    *region = ptr_ + used_;
    used_ += rounded;
    return Status::Ok();
  }

 private:
  char* ptr_ = nullptr;
  size_t capacity_ = 0, used_ = 0;
  std::vector<char*> retired_;
};

// ---- Kernels ------------------------------------------------------------------------

// for (size_t i ...; i < n; ...) over the whole grid, grid-stride.
#define DIN_GRID_LOOP(i, n)                                                            \
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<size_t>(gridDim.x) * blockDim.x)

// out[i * stride + col + k] = table[rows[i] * d + k], i < n, k < d.
__global__ void GatherRowsKernel(const float* table, const uint32_t* rows, int n, int d, float* out,
                                 int stride, int col) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * d) {
    const int i = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    out[static_cast<size_t>(i) * stride + col + k] = table[static_cast<size_t>(rows[i]) * d + k];
  }
}

// Sum-pooled field: out[b * stride + col + k] = Σ_o table[rows[o] * d + k], o in sample b.
__global__ void SumPoolRowsKernel(const float* table, const uint32_t* offsets, const uint32_t* rows,
                                  int batch, int d, float* out, int stride, int col) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    float acc = 0.0f;
    for (uint32_t o = offsets[b]; o < offsets[b + 1]; ++o)
      acc += table[static_cast<size_t>(rows[o]) * d + k];
    out[static_cast<size_t>(b) * stride + col + k] = acc;
  }
}

// Scatter-add of a sum-pooled field's gradient to its rows.
__global__ void ScatterPooledKernel(const float* grad, int stride, int col, const uint32_t* offsets,
                                    const uint32_t* rows, int batch, int d, float* table_grad) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    const float g = grad[static_cast<size_t>(b) * stride + col + k];
    for (uint32_t o = offsets[b]; o < offsets[b + 1]; ++o)
      atomicAdd(&table_grad[static_cast<size_t>(rows[o]) * d + k], g);
  }
}

// table_grad[rows[i] * d + k] += grad[i * stride + col + k].
__global__ void ScatterRowsKernel(const float* grad, int stride, int col, const uint32_t* rows,
                                  int n, int d, float* table_grad) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * d) {
    const int i = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    atomicAdd(&table_grad[static_cast<size_t>(rows[i]) * d + k],
              grad[static_cast<size_t>(i) * stride + col + k]);
  }
}

// Deterministic embedding-gradient scatter: unique row u of a table sums its
// contributions [offsets[u], offsets[u + 1]) in the order the host listed them. A
// contribution's code is (source << 62) | element offset of its d values in that source
// (0: dva, 1: de, 2: dz). One thread per (row, k) writes its element: no atomics, so runs
// are bit-identical.
__global__ void OrderedScatterKernel(const uint32_t* rows, const uint32_t* offsets,
                                     const uint64_t* codes, int n_rows, int d, const float* dva,
                                     const float* de, const float* dz, float* table_grad) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n_rows) * d) {
    const size_t u = idx / d;
    const int k = static_cast<int>(idx % d);
    float acc = 0.0f;
    for (uint32_t c = offsets[u]; c < offsets[u + 1]; ++c) {
      const uint64_t code = codes[c];
      const uint64_t src = code >> 62, at = code & ((uint64_t{1} << 62) - 1);
      const float* base = src == 0 ? dva : (src == 1 ? de : dz);
      acc += base[at + k];
    }
    table_grad[static_cast<size_t>(rows[u]) * d + k] = acc;
  }
}

// The activation unit's first layer, split (model_math.h): the fused weights wc [d x out]
// and w2 [2d x out] from the layer's weight w [4d x out].
__global__ void FuseAttentionWeightsKernel(const float* w, int d, int out, float* wc, float* w2) {
  DIN_GRID_LOOP(i, static_cast<size_t>(d) * out) math::FuseAttentionWeight(w, d, out, i, wc, w2);
}

// Per-position input [e, v_a ⊙ e], [n x 2d].
__global__ void PositionInputKernel(const float* va, const float* e, const int32_t* pos_sample,
                                    int n, int d, float* x) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * d) {
    const int p = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    math::PositionInput(va[static_cast<size_t>(pos_sample[p]) * d + k], e[idx],
                        x + static_cast<size_t>(p) * 2 * d, k, d);
  }
}

__global__ void BiasAddKernel(float* s, const float* bias, size_t total, int k) {
  DIN_GRID_LOOP(idx, total) s[idx] += bias[idx % k];
}

// s[r, j] += row_bias[group[r], j]: each position's candidate share.
__global__ void RowBiasAddKernel(float* s, const float* row_bias, const int32_t* group,
                                 size_t total, int k) {
  DIN_GRID_LOOP(idx, total) {
    const size_t r = idx / k;
    s[idx] += row_bias[static_cast<size_t>(group[r]) * k + idx % k];
  }
}

__global__ void PointwiseForwardKernel(Act act, const float* s, const float* alpha, size_t total,
                                       int k, float* y) {
  DIN_GRID_LOOP(idx, total)
  y[idx] = math::PointwiseForward(act, s[idx], alpha != nullptr ? alpha[idx % k] : 0.0f);
}

__global__ void DiceForwardKernel(const float* s, const float* mean, const float* inv_std,
                                  const float* alpha, size_t total, int k, float* p, float* y) {
  DIN_GRID_LOOP(idx, total) {
    const int j = static_cast<int>(idx % k);
    const float pp = math::Sigmoid((s[idx] - mean[j]) * inv_std[j]);
    p[idx] = pp;
    y[idx] = math::DiceForward(s[idx], pp, alpha[j]);
  }
}

// Column reductions over a row-major [n x k] matrix: f(r, j, v) yields NV values per
// element (and may write per-element outputs). Block row y sums the chunks of
// kRowsPerChunk rows y, y + gridDim.y, ... and writes its column sums to
// partials[(y * NV + i) * k + j]. Coalesced: a warp reads 32 adjacent columns of one
// row. Deterministic (no atomics; the grid depends on n only).
template <int NV, typename F>
__global__ void ColumnReduceKernel(int n, int k, F f, float* partials) {
  const int j = blockIdx.x * kColTile + threadIdx.x;
  float acc[NV];
  for (int i = 0; i < NV; ++i) acc[i] = 0.0f;
  if (j < k)
    for (size_t r0 = static_cast<size_t>(blockIdx.y) * kRowsPerChunk; r0 < static_cast<size_t>(n);
         r0 += static_cast<size_t>(gridDim.y) * kRowsPerChunk) {
      const int r1 = min(n, static_cast<int>(r0) + kRowsPerChunk);
      for (int r = static_cast<int>(r0) + threadIdx.y; r < r1; r += kRowThreads) {
        float v[NV];
        f(r, j, v);
        for (int i = 0; i < NV; ++i) acc[i] += v[i];
      }
    }
  __shared__ float sh[NV][kRowThreads][kColTile];
  for (int i = 0; i < NV; ++i) sh[i][threadIdx.y][threadIdx.x] = acc[i];
  __syncthreads();
  if (threadIdx.y == 0 && j < k)
    for (int i = 0; i < NV; ++i) {
      float s = 0.0f;
      for (int t = 0; t < kRowThreads; ++t) s += sh[i][t][threadIdx.x];
      partials[(static_cast<size_t>(blockIdx.y) * NV + i) * k + j] = s;
    }
}

// out[i] = Σ_c partials[c * width + i].
__global__ void SumChunksKernel(const float* partials, int chunks, int width, float* out) {
  DIN_GRID_LOOP(i_, static_cast<size_t>(width)) {
    const int i = static_cast<int>(i_);
    float s = 0.0f;
    for (int c = 0; c < chunks; ++c) s += partials[static_cast<size_t>(c) * width + i];
    out[i] = s;
  }
}

struct ValueF {
  const float* s;
  int k;
  __device__ void operator()(int r, int j, float* v) const {
    v[0] = s[static_cast<size_t>(r) * k + j];
  }
};
struct SquaredDeviationF {
  const float* s;
  const float* mean;
  int k;
  __device__ void operator()(int r, int j, float* v) const {
    const float d = s[static_cast<size_t>(r) * k + j] - mean[j];
    v[0] = d * d;
  }
};
// Dice backward, first pass: grad ← ∂/∂s with p fixed, dxhat stored; sums of dα, dx̂,
// dx̂·x̂.
struct DiceBackwardF {
  float* grad;
  float* dxhat;
  const float* s;
  const float* p;
  const float* mean;
  const float* inv_std;
  const float* alpha;
  int k;
  __device__ void operator()(int r, int j, float* v) const {
    const size_t i = static_cast<size_t>(r) * k + j;
    const float xhat = (s[i] - mean[j]) * inv_std[j];
    float dx, da;
    grad[i] = math::DiceBackward(grad[i], s[i], p[i], alpha[j], &dx, &da);
    dxhat[i] = dx;
    v[0] = da;
    v[1] = dx;
    v[2] = dx * xhat;
  }
};
struct PointwiseBackwardF {
  Act act;
  float* grad;
  const float* s;
  const float* y;
  const float* alpha;
  int k;
  __device__ void operator()(int r, int j, float* v) const {
    const size_t i = static_cast<size_t>(r) * k + j;
    float da;
    grad[i] =
        math::PointwiseBackward(act, grad[i], s[i], y[i], alpha != nullptr ? alpha[j] : 0.0f, &da);
    v[0] = da;
  }
};

// mean[j] = sums[j] / n: the batch mean, computed once and read by the centred squares,
// the statistics and the normalisation.
__global__ void DiceMeanKernel(const float* sums, int n, int k, float* mean) {
  DIN_GRID_LOOP(j, static_cast<size_t>(k)) mean[j] = sums[j] / n;
}

// sums: Σ (s − mean)² per column. Writes inv_std; advances the running stats.
__global__ void DiceTrainStatsKernel(const float* sq_sums, int n, int k, float momentum, float eps,
                                     float* running_mean, float* running_var, const float* mean,
                                     float* inv_std) {
  DIN_GRID_LOOP(j_, static_cast<size_t>(k)) {
    const int j = static_cast<int>(j_);
    const float m = mean[j], var = sq_sums[j] / n;
    inv_std[j] = math::InvStd(var, eps);
    if (running_mean != nullptr) {
      const float unbiased = n > 1 ? var * n / (n - 1) : var;
      running_mean[j] = math::RunningUpdate(running_mean[j], m, momentum);
      running_var[j] = math::RunningUpdate(running_var[j], unbiased, momentum);
    }
  }
}

__global__ void DiceEvalStatsKernel(const float* running_mean, const float* running_var, int k,
                                    float eps, float* mean, float* inv_std) {
  DIN_GRID_LOOP(j_, static_cast<size_t>(k)) {
    const int j = static_cast<int>(j_);
    mean[j] = running_mean[j];
    inv_std[j] = math::InvStd(running_var[j], eps);
  }
}

// grad += BN input gradient (batch statistics) or inv_std·dx̂ (fixed statistics);
// sums = [dα | Σ dx̂ | Σ dx̂·x̂].
// With a BatchStatsSync the sums are already the global means (rows = 1), else they are
// this batch's n rows' sums (rows = n).
__global__ void DiceBatchNormBackwardKernel(float* grad, const float* dxhat, const float* s,
                                            const float* mean, const float* inv_std,
                                            const float* sums, bool batch_stats, int n, int k,
                                            float rows) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * k) {
    const int j = static_cast<int>(idx % k);
    if (batch_stats) {
      const float xhat = (s[idx] - mean[j]) * inv_std[j];
      grad[idx] += math::BatchNormInputGrad(dxhat[idx], xhat, sums[k + j] / rows,
                                            sums[2 * k + j] / rows, inv_std[j]);
    } else {
      grad[idx] += inv_std[j] * dxhat[idx];
    }
  }
}

// weights: attention scores in, softmax over each sample's positions out.
__global__ void SegmentSoftmaxKernel(float* w, const int32_t* offsets, int batch) {
  DIN_GRID_LOOP(b_, static_cast<size_t>(batch)) {
    const int b = static_cast<int>(b_);
    const int lo = offsets[b], hi = offsets[b + 1];
    if (lo == hi) continue;
    float mx = w[lo];
    for (int n = lo; n < hi; ++n) mx = fmaxf(mx, w[n]);
    float sum = 0.0f;
    for (int n = lo; n < hi; ++n) sum += (w[n] = math::Exp(w[n] - mx));
    for (int n = lo; n < hi; ++n) w[n] /= sum;
  }
}

// SUM (mean = false) or MEAN pooling weights.
__global__ void FixedWeightsKernel(float* w, const int32_t* offsets, int batch, bool mean) {
  DIN_GRID_LOOP(b_, static_cast<size_t>(batch)) {
    const int b = static_cast<int>(b_);
    const int lo = offsets[b], hi = offsets[b + 1];
    const float v = mean ? 1.0f / max(hi - lo, 1) : 1.0f;
    for (int n = lo; n < hi; ++n) w[n] = v;
  }
}

// u[b, k] = Σ_n w[n]·e[n, k] over sample b's positions.
__global__ void PoolKernel(const float* w, const float* e, const int32_t* offsets, int batch, int d,
                           float* u) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    float acc = 0.0f;
    for (int n = offsets[b]; n < offsets[b + 1]; ++n)
      acc += w[n] * e[static_cast<size_t>(n) * d + k];
    u[idx] = acc;
  }
}

// z[b, uc..] = [u, v_a, u ⊙ v_a].
__global__ void InterestColumnsKernel(const float* u, const float* va, int batch, int d, float* z,
                                      int stride, int uc) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    float* row = z + static_cast<size_t>(b) * stride + uc;
    row[k] = u[idx];
    row[d + k] = va[idx];
    row[2 * d + k] = u[idx] * va[idx];
  }
}

// Loss and ∂loss/∂logit for the batch mean; one block.
__global__ void LossKernel(const float* logits, const float* labels, int batch, float* dlogit,
                           float* loss) {
  __shared__ float sh[kThreads];
  float acc = 0.0f;
  for (int b = threadIdx.x; b < batch; b += blockDim.x) {
    acc += math::BceWithLogits(logits[b], labels[b]);
    dlogit[b] = math::BceGrad(logits[b], labels[b]) / batch;
  }
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = sh[0] / batch;
}

// du = dz_u + dz_uv ⊙ v_a; dva = dz_va + dz_uv ⊙ u.
__global__ void InterestBackwardKernel(const float* dz, int stride, int uc, const float* u,
                                       const float* va, int batch, int d, float* du, float* dva) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    const float* row = dz + static_cast<size_t>(b) * stride + uc;
    du[idx] = row[k] + row[2 * d + k] * va[idx];
    dva[idx] = row[d + k] + row[2 * d + k] * u[idx];
  }
}

// de[n, k] = w[n]·du[b, k].
__global__ void PoolBackwardKernel(const float* w, const float* du, const int32_t* pos_sample,
                                   int n, int d, float* de) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * d) {
    const int p = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    de[idx] = w[p] * du[static_cast<size_t>(pos_sample[p]) * d + k];
  }
}

// dw[n] = du[b]·e[n].
__global__ void WeightGradKernel(const float* du, const float* e, const int32_t* pos_sample, int n,
                                 int d, float* dw) {
  DIN_GRID_LOOP(p_, static_cast<size_t>(n)) {
    const int p = static_cast<int>(p_);
    const float* a = du + static_cast<size_t>(pos_sample[p]) * d;
    const float* b = e + static_cast<size_t>(p) * d;
    float acc = 0.0f;
    for (int k = 0; k < d; ++k) acc += a[k] * b[k];
    dw[p] = acc;
  }
}

__global__ void SoftmaxBackwardKernel(const float* w, float* dw, const int32_t* offsets,
                                      int batch) {
  DIN_GRID_LOOP(b_, static_cast<size_t>(batch)) {
    const int b = static_cast<int>(b_);
    float dot = 0.0f;
    for (int n = offsets[b]; n < offsets[b + 1]; ++n) dot += w[n] * dw[n];
    for (int n = offsets[b]; n < offsets[b + 1]; ++n) dw[n] = w[n] * (dw[n] - dot);
  }
}

// The split first layer's candidate share: dcand[b, j] = Σ ds[p, j] over sample b's
// positions (a loop in position order: deterministic).
__global__ void SegmentSumKernel(const float* ds, const int32_t* offsets, int batch, int k,
                                 float* dcand) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * k) {
    const int b = static_cast<int>(idx / k), j = static_cast<int>(idx % k);
    float acc = 0.0f;
    for (int p = offsets[b]; p < offsets[b + 1]; ++p) acc += ds[static_cast<size_t>(p) * k + j];
    dcand[idx] = acc;
  }
}

// The first layer's weight gradient in W's blocks from dwc and dw2 (model_math.h).
__global__ void SplitAttentionWeightGradKernel(const float* dwc, const float* dw2, int d, int out,
                                               float* dw) {
  DIN_GRID_LOOP(i, static_cast<size_t>(d) * out)
  math::SplitAttentionWeightGrad(dwc, dw2, d, out, i, dw);
}

// Gradient of the per-position input [e, v_a ⊙ e]: de[n, k] += ∂/∂e; per (b, k),
// dva[b, k] += Σ_n ∂/∂v_a over the sample's positions (a loop, not atomics: deterministic).
__global__ void PositionInputBackwardEKernel(const float* dx, const float* va, const float* e,
                                             const int32_t* pos_sample, int n, int d, float* de) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(n) * d) {
    const int p = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    float g_va, g_e;
    math::PositionInputBackward(dx + static_cast<size_t>(p) * 2 * d, k, d,
                                va[static_cast<size_t>(pos_sample[p]) * d + k], e[idx], &g_va,
                                &g_e);
    de[idx] += g_e;
  }
}
__global__ void PositionInputBackwardVaKernel(const float* dx, const float* va, const float* e,
                                              const int32_t* offsets, int batch, int d,
                                              float* dva) {
  DIN_GRID_LOOP(idx, static_cast<size_t>(batch) * d) {
    const int b = static_cast<int>(idx / d), k = static_cast<int>(idx % d);
    float acc = 0.0f;
    for (int p = offsets[b]; p < offsets[b + 1]; ++p) {
      float g_va, g_e;
      math::PositionInputBackward(dx + static_cast<size_t>(p) * 2 * d, k, d, va[idx],
                                  e[static_cast<size_t>(p) * d + k], &g_va, &g_e);
      acc += g_va;
    }
    dva[idx] += acc;
  }
}

// ---- The backend --------------------------------------------------------------------

class CudaBackend final : public ModelBackend {
 public:
  CudaBackend(ModelLayout layout, int device) : ModelBackend(std::move(layout)), device_(device) {}
  ~CudaBackend() override {
    // The buffers (members, freed after this body) and handles belong to device_, which
    // need not be the thread's current device.
    cudaSetDevice(device_);
    if (blas_ != nullptr) cublasDestroy(blas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  std::string_view name() const override { return "cuda"; }

  Status Init() {
    DIN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    DIN_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DIN_CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas_));
    DIN_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_, stream_));
    // Full fp32 GEMMs: the CPU parity test expects fp32 accuracy, not TF32.
    DIN_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH));
    DIN_RETURN_IF_ERROR(params_d_.Reserve(std::max<size_t>(1, params_.size())));
    DIN_RETURN_IF_ERROR(grads_d_.Reserve(std::max<size_t>(1, params_.size())));
    DIN_RETURN_IF_ERROR(running_d_.Reserve(std::max<size_t>(1, running_.size())));
    return Status::Ok();
  }

 protected:
  Status DoTrainStep(const BatchPlan& plan, const ModelInput& input, std::span<const float> labels,
                     float* loss) override {
    DIN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    DIN_RETURN_IF_ERROR(BeginCall());
    DIN_RETURN_IF_ERROR(Upload(plan, input, labels));
    DIN_RETURN_IF_ERROR(Forward(plan, input, Mode::kTrain));
    DIN_RETURN_IF_ERROR(Backward(plan, input));
    DIN_RETURN_IF_ERROR(DownloadResults(input, /*train=*/true, loss));
    return Status::Ok();
  }

  Status DoSetDeterministic(bool on) override {
    deterministic_ = on;
    return Status::Ok();
  }

  Status DoSetBatchStatsSync(BatchStatsSync* sync) override {
    sync_ = sync;
    return Status::Ok();
  }

  Status DoPredict(const BatchPlan& plan, const ModelInput& input) override {
    DIN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    DIN_RETURN_IF_ERROR(BeginCall());
    DIN_RETURN_IF_ERROR(Upload(plan, input, {}));
    DIN_RETURN_IF_ERROR(Forward(plan, input, Mode::kEval));
    return DownloadResults(input, /*train=*/false, nullptr);
  }

 private:
  // After each launch: a launch error (bad configuration, bad argument) names the kernel;
  // with DIN_CUDA_DEBUG the stream is synchronised too, so a fault inside it does.
  Status AfterLaunch(const char* kernel) {
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess && CudaDebug()) {
      err = cudaStreamSynchronize(stream_);
      if (err == cudaSuccess) err = cudaGetLastError();
    }
    if (err != cudaSuccess)
      return Status::Internal(std::string("CUDA kernel ") + kernel + ": " +
                              cudaGetErrorString(err));
    return Status::Ok();
  }

  struct MlpBuffers {
    DeviceBuffer<float> s, y, p, mean, inv_std;
    double global_rows = 0;  // rows the Dice statistics covered (all workers when synced)
  };
  // The first layer replaced by the activation unit's split one: x [n x first_in] times
  // first_weight plus first_row_bias[first_group[r]] per row; the backward writes the
  // weight gradient to first_dweight, leaves the layer's bias to the caller and keeps
  // ∂L/∂(pre-activation) in first_grad.
  struct Mlp {
    std::vector<MlpBuffers> layers;
    Mode mode = Mode::kTrain;
    int samples = 0;  // this worker's samples in the step (the scale of its loss)
    const float* first_weight = nullptr;
    int first_in = 0;
    const float* first_row_bias = nullptr;
    const int32_t* first_group = nullptr;
    float* first_dweight = nullptr;
    const float* first_grad = nullptr;
  };

  // Host → device through the pinned staging buffer.
  Status StageUpload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return Status::Ok();
    char* region = nullptr;
    DIN_RETURN_IF_ERROR(staging_up_.Take(bytes, &region));
    std::memcpy(region, src, bytes);
    DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, region, bytes, cudaMemcpyHostToDevice, stream_));
    return Status::Ok();
  }
  template <typename T>
  Status Copy(DeviceBuffer<T>& dst, const T* src, size_t n) {
    DIN_RETURN_IF_ERROR(dst.Reserve(std::max<size_t>(n, 1)));
    return StageUpload(dst.get(), src, n * sizeof(T));
  }
  // Device → host through the pinned staging buffer; the host copy happens in
  // FinishDownloads, after the stream synchronised.
  Status StageDownload(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return Status::Ok();
    char* region = nullptr;
    DIN_RETURN_IF_ERROR(staging_down_.Take(bytes, &region));
    DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(region, src, bytes, cudaMemcpyDeviceToHost, stream_));
    pending_.push_back({dst, region, bytes});
    return Status::Ok();
  }
  // A call that failed half-way may have left copies queued: wait for them before the
  // staging buffers are reused, and drop its pending host copies.
  Status BeginCall() {
    DIN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    pending_.clear();
    staging_up_.Reset();
    staging_down_.Reset();
    return Status::Ok();
  }
  Status FinishDownloads() {
    DIN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    for (const PendingDownload& p : pending_) std::memcpy(p.dst, p.region, p.bytes);
    pending_.clear();
    staging_up_.Reset();
    staging_down_.Reset();
    return Status::Ok();
  }

  // Row-major C [m x n] = op(A) [m x k] · op(B) [k x n] (+ beta·C), lda/ldb/ldc the stored
  // row lengths. cuBLAS is column-major, so it computes Cᵀ = op(B)ᵀ·op(A)ᵀ.
  Status Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b,
              int ldb, float* c, int ldc, float beta = 0.0f) {
    if (m == 0 || n == 0) return Status::Ok();
    const float one = 1.0f;
    DIN_CUBLAS_RETURN_IF_ERROR(cublasSgemm(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                           ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, b, ldb, a,
                                           lda, &beta, c, ldc));
    return Status::Ok();
  }

  template <int NV, typename F>
  Status ColumnSums(int n, int k, F f, float* out) {
    const int chunks = std::max(1, (n + kRowsPerChunk - 1) / kRowsPerChunk);
    DIN_RETURN_IF_ERROR(
        partials_.Reserve(static_cast<size_t>(std::min(chunks, kMaxChunkBlocks)) * NV * k));
    if (n == 0) {
      DIN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, sizeof(float) * NV * k, stream_));
      return Status::Ok();
    }
    const dim3 grid((k + kColTile - 1) / kColTile, std::min(chunks, kMaxChunkBlocks));
    const dim3 block(kColTile, kRowThreads);
    DIN_LAUNCH_SYNC(ColumnReduceKernel<NV>, grid, block, n, k, f, partials_.get());
    DIN_LAUNCH(SumChunksKernel, Blocks(NV * k), kThreads, partials_.get(), static_cast<int>(grid.y),
               NV * k, out);
    return Status::Ok();
  }

  Status Upload(const BatchPlan& plan, const ModelInput& input, std::span<const float> labels) {
    // Tables and their gradients, concatenated.
    table_offsets_.assign(input.tables.size() + 1, 0);
    for (size_t t = 0; t < input.tables.size(); ++t)
      table_offsets_[t + 1] =
          table_offsets_[t] + static_cast<size_t>(input.tables[t].rows) * input.tables[t].dim;
    DIN_RETURN_IF_ERROR(tables_d_.Reserve(std::max<size_t>(1, table_offsets_.back())));
    DIN_RETURN_IF_ERROR(table_grads_d_.Reserve(std::max<size_t>(1, table_offsets_.back())));
    for (size_t t = 0; t < input.tables.size(); ++t)
      if (table_offsets_[t + 1] > table_offsets_[t])
        DIN_RETURN_IF_ERROR(
            StageUpload(tables_d_.get() + table_offsets_[t], input.tables[t].data,
                        (table_offsets_[t + 1] - table_offsets_[t]) * sizeof(float)));
    DIN_RETURN_IF_ERROR(Copy(params_d_, params_.data(), params_.size()));
    DIN_RETURN_IF_ERROR(Copy(running_d_, running_.data(), running_.size()));
    DIN_RETURN_IF_ERROR(Copy(labels_d_, labels.data(), labels.size()));

    // Indices: plan arrays and the pooled fields' CSR, one staging vector each.
    idx_host_.clear();
    auto append = [&](const auto& v) {
      const size_t at = idx_host_.size();
      for (auto x : v) idx_host_.push_back(static_cast<uint32_t>(x));
      return at;
    };
    at_hist_offsets_ = append(plan.hist_offsets);
    at_pos_sample_ = append(plan.pos_sample);
    at_hist_rows_.clear();
    at_cand_rows_.clear();
    for (size_t i = 0; i < plan.hist_rows.size(); ++i) {
      at_hist_rows_.push_back(append(plan.hist_rows[i]));
      at_cand_rows_.push_back(append(plan.cand_rows[i]));
    }
    at_seg_offsets_.clear();
    at_seg_rows_.clear();
    for (const TopSegment& seg : layout_.segments()) {
      const FieldRows& f = Field(input, seg);
      at_seg_offsets_.push_back(append(f.offsets));
      at_seg_rows_.push_back(append(f.rows));
    }
    if (deterministic_ && !labels.empty()) DIN_RETURN_IF_ERROR(BuildScatterIndex(plan, input));
    return Copy(idx_d_, idx_host_.data(), idx_host_.size());
  }

  // For each table: every (row, contribution) of the batch, sorted by row (stably, so a
  // row sums its contributions in a fixed order), appended to idx_host_ and codes_host_.
  Status BuildScatterIndex(const BatchPlan& plan, const ModelInput& input) {
    const int B = plan.batch, N = plan.positions, D = layout_.item_dim();
    const int top_in = layout_.top_in();
    constexpr uint64_t kDva = 0, kDe = uint64_t{1} << 62, kDz = uint64_t{2} << 62;
    scatter_.clear();
    codes_host_.clear();
    for (size_t t = 0; t < input.tables.size(); ++t) {
      contrib_.clear();
      for (size_t s = 0; s < layout_.segments().size(); ++s) {
        const TopSegment& seg = layout_.segments()[s];
        const FieldRows& f = Field(input, seg);
        if (static_cast<size_t>(f.table) != t) continue;
        for (int b = 0; b < B; ++b)
          for (uint32_t o = f.offsets[b]; o < f.offsets[b + 1]; ++o)
            contrib_.emplace_back(f.rows[o], kDz | (static_cast<uint64_t>(b) * top_in + seg.col));
      }
      for (size_t i = 0; i < layout_.item_fields().size(); ++i) {
        const int f = layout_.item_fields()[i], col = layout_.item_cols()[i];
        if (static_cast<size_t>(input.candidate_fields[f].table) != t) continue;
        for (int b = 0; b < B; ++b)
          contrib_.emplace_back(plan.cand_rows[i][b], kDva | (static_cast<uint64_t>(b) * D + col));
        for (int p = 0; p < N; ++p)
          contrib_.emplace_back(plan.hist_rows[i][p], kDe | (static_cast<uint64_t>(p) * D + col));
      }
      if (contrib_.empty()) continue;
      std::stable_sort(contrib_.begin(), contrib_.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      ScatterIndex ix;
      ix.table = static_cast<int>(t);
      ix.d = input.tables[t].dim;
      ix.at_rows = idx_host_.size();
      for (size_t c = 0; c < contrib_.size(); ++c)
        if (c == 0 || contrib_[c].first != contrib_[c - 1].first) {
          idx_host_.push_back(contrib_[c].first);
          ++ix.n_rows;
        }
      ix.at_offsets = idx_host_.size();
      const size_t code0 = codes_host_.size();
      if (code0 + contrib_.size() > UINT32_MAX)
        return Status::InvalidArgument("batch too large for the deterministic scatter index");
      for (size_t c = 0; c < contrib_.size(); ++c) {
        if (c == 0 || contrib_[c].first != contrib_[c - 1].first)
          idx_host_.push_back(static_cast<uint32_t>(code0 + c));
        codes_host_.push_back(contrib_[c].second);
      }
      idx_host_.push_back(static_cast<uint32_t>(codes_host_.size()));
      scatter_.push_back(ix);
    }
    return Copy(codes_d_, codes_host_.data(), codes_host_.size());
  }

  static const FieldRows& Field(const ModelInput& input, const TopSegment& seg) {
    switch (seg.group) {
      case TopSegment::Group::kUser:
        return input.user_fields[seg.field];
      case TopSegment::Group::kCandidate:
        return input.candidate_fields[seg.field];
      default:
        return input.context_fields[seg.field];
    }
  }
  const uint32_t* Idx(size_t at) const { return idx_d_.get() + at; }
  const int32_t* IdxI(size_t at) const {
    return reinterpret_cast<const int32_t*>(idx_d_.get() + at);
  }
  const float* Table(int t) const { return tables_d_.get() + table_offsets_[t]; }
  float* TableGrad(int t) const { return table_grads_d_.get() + table_offsets_[t]; }

  // Device → host now (the stream synchronised), for the statistics a BatchStatsSync sums.
  Status DownloadNow(std::vector<float>* host, const float* src, size_t n) {
    host->resize(n);
    if (n == 0) return Status::Ok();
    char* region = nullptr;
    DIN_RETURN_IF_ERROR(staging_down_.Take(n * sizeof(float), &region));
    DIN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(region, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    DIN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    std::memcpy(host->data(), region, n * sizeof(float));
    return Status::Ok();
  }

  // Dice batch statistics summed over the workers (BatchStatsSync, as the CPU backend
  // does): this worker sends [Σs | M2 + (Σs)²/n | n] (M2 its centred sum of squares) and
  // normalises with the global mean and variance. Leaves the mean in b.mean and inv_std,
  // advances the running statistics; n may be 0 (the worker still takes part).
  Status SyncedDiceStats(MlpBuffers& b, int n, int k, float* rmean, float* rvar) {
    std::vector<float>& local = host_stats_;
    local.assign(2 * static_cast<size_t>(k), 0.0f);
    if (n > 0) {
      DIN_RETURN_IF_ERROR(stats_.Reserve(2 * static_cast<size_t>(k)));
      DIN_RETURN_IF_ERROR(ColumnSums<1>(n, k, ValueF{b.s.get(), k}, stats_.get()));
      DIN_LAUNCH(DiceMeanKernel, Blocks(k), kThreads, stats_.get(), n, k, b.mean.get());
      DIN_RETURN_IF_ERROR(
          ColumnSums<1>(n, k, SquaredDeviationF{b.s.get(), b.mean.get(), k}, stats_.get() + k));
      DIN_RETURN_IF_ERROR(DownloadNow(&local, stats_.get(), 2 * static_cast<size_t>(k)));
    }
    std::vector<double>& sums = host_sums_;
    sums.assign(2 * static_cast<size_t>(k) + 1, 0.0);
    for (int j = 0; j < k; ++j) {
      sums[j] = local[j];
      sums[k + j] = static_cast<double>(local[k + j]) + (n > 0 ? sums[j] * sums[j] / n : 0.0);
    }
    sums[2 * k] = n;
    sync_->SumOverWorkers(sums);
    const double rows = sums[2 * k];
    b.global_rows = rows;
    // [mean | centred sum of squares] of the global batch, as floats.
    local.resize(2 * static_cast<size_t>(k));
    for (int j = 0; j < k; ++j) {
      const double m = rows > 0 ? sums[j] / rows : 0.0;
      local[j] = static_cast<float>(m);
      local[k + j] = static_cast<float>(std::max(0.0, sums[k + j] - m * sums[j]));
    }
    DIN_RETURN_IF_ERROR(stats_.Reserve(2 * static_cast<size_t>(k)));
    DIN_RETURN_IF_ERROR(StageUpload(b.mean.get(), local.data(), sizeof(float) * k));
    DIN_RETURN_IF_ERROR(StageUpload(stats_.get(), local.data() + k, sizeof(float) * k));
    // No rows anywhere: nothing is normalised, the running statistics stay.
    const bool any = rows > 0;
    DIN_LAUNCH(DiceTrainStatsKernel, Blocks(k), kThreads, stats_.get(),
               static_cast<int>(std::max(rows, 1.0)), k, layout_.dice_momentum(),
               layout_.dice_epsilon(), any ? rmean : nullptr, any ? rvar : nullptr, b.mean.get(),
               b.inv_std.get());
    return Status::Ok();
  }

  // The Dice backward's sums through the statistics over all workers: this worker's
  // [Σ dx̂ | Σ dx̂·x̂] (at sums + k) scaled by its samples, summed, and turned into the
  // global batch's means in this worker's loss scale (as the CPU backend does).
  Status SyncedDiceBackwardSums(const MlpBuffers& b, int samples, int k, float* sums) {
    std::vector<float>& local = host_stats_;
    DIN_RETURN_IF_ERROR(DownloadNow(&local, sums + k, 2 * static_cast<size_t>(k)));
    std::vector<double>& red = host_sums_;
    red.assign(2 * static_cast<size_t>(k), 0.0);
    for (int j = 0; j < 2 * k; ++j) red[j] = static_cast<double>(local[j]) * samples;
    sync_->SumOverWorkers(red);
    const double scale = b.global_rows > 0 && samples > 0 ? 1.0 / (b.global_rows * samples) : 0.0;
    for (int j = 0; j < 2 * k; ++j) local[j] = static_cast<float>(red[j] * scale);
    return StageUpload(sums + k, local.data(), sizeof(float) * 2 * k);
  }

  Status MlpForward(Mlp& mlp, std::span<const LayerSpec> layers, Mode mode, const float* x, int n) {
    mlp.layers.resize(layers.size());
    mlp.mode = mode;
    const float* params = params_d_.get();
    const bool synced = sync_ != nullptr && mode == Mode::kTrain;
    for (size_t i = 0; i < layers.size(); ++i) {
      const LayerSpec& l = layers[i];
      MlpBuffers& b = mlp.layers[i];
      const bool first = i == 0 && mlp.first_weight != nullptr;
      const int in_w = first ? mlp.first_in : l.in;
      const size_t size = static_cast<size_t>(n) * l.out;
      DIN_RETURN_IF_ERROR(b.s.Reserve(std::max<size_t>(size, 1)));
      DIN_RETURN_IF_ERROR(b.y.Reserve(std::max<size_t>(size, 1)));
      b.global_rows = n;
      const float* in = i == 0 ? x : mlp.layers[i - 1].y.get();
      DIN_RETURN_IF_ERROR(Gemm(false, false, n, l.out, in_w, in, in_w,
                               first ? mlp.first_weight : params + l.weight, l.out, b.s.get(),
                               l.out));
      // A synced Dice layer takes part in the workers' sums even without rows.
      if (size == 0 && !(synced && l.act == Act::kDice)) continue;
      if (size > 0) {
        if (first)
          DIN_LAUNCH(RowBiasAddKernel, Blocks(size), kThreads, b.s.get(), mlp.first_row_bias,
                     mlp.first_group, size, l.out);
        else
          DIN_LAUNCH(BiasAddKernel, Blocks(size), kThreads, b.s.get(), params + l.bias, size,
                     l.out);
      }
      const float* alpha = HasAlpha(l.act) ? params + l.alpha : nullptr;
      if (l.act == Act::kNone) {
        DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.y.get(), b.s.get(), size * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, stream_));
      } else if (l.act != Act::kDice) {
        DIN_LAUNCH(PointwiseForwardKernel, Blocks(size), kThreads, l.act, b.s.get(), alpha, size,
                   l.out, b.y.get());
      } else {
        DIN_RETURN_IF_ERROR(b.p.Reserve(std::max<size_t>(size, 1)));
        DIN_RETURN_IF_ERROR(b.mean.Reserve(l.out));
        DIN_RETURN_IF_ERROR(b.inv_std.Reserve(l.out));
        float* rmean = running_d_.get() + l.running;
        float* rvar = rmean + l.out;
        const float eps = layout_.dice_epsilon();
        if (synced) {
          DIN_RETURN_IF_ERROR(SyncedDiceStats(b, n, l.out, rmean, rvar));
        } else if (mode == Mode::kTrain) {
          DIN_RETURN_IF_ERROR(stats_.Reserve(static_cast<size_t>(l.out)));
          DIN_RETURN_IF_ERROR(ColumnSums<1>(n, l.out, ValueF{b.s.get(), l.out}, stats_.get()));
          DIN_LAUNCH(DiceMeanKernel, Blocks(l.out), kThreads, stats_.get(), n, l.out, b.mean.get());
          DIN_RETURN_IF_ERROR(ColumnSums<1>(
              n, l.out, SquaredDeviationF{b.s.get(), b.mean.get(), l.out}, stats_.get()));
          DIN_LAUNCH(DiceTrainStatsKernel, Blocks(l.out), kThreads, stats_.get(), n, l.out,
                     layout_.dice_momentum(), eps, rmean, rvar, b.mean.get(), b.inv_std.get());
        } else {
          DIN_LAUNCH(DiceEvalStatsKernel, Blocks(l.out), kThreads, rmean, rvar, l.out, eps,
                     b.mean.get(), b.inv_std.get());
        }
        if (size > 0)
          DIN_LAUNCH(DiceForwardKernel, Blocks(size), kThreads, b.s.get(), b.mean.get(),
                     b.inv_std.get(), alpha, size, l.out, b.p.get(), b.y.get());
      }
    }
    DIN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::Ok();
  }

  // dout: [n x 1] device; writes the layers' gradients and, if dx, ∂/∂x.
  Status MlpBackward(Mlp& mlp, std::span<const LayerSpec> layers, const float* x, int n,
                     const float* dout, float* dx) {
    size_t width = 1;
    for (const LayerSpec& l : layers) width = std::max<size_t>(width, std::max(l.in, l.out));
    DIN_RETURN_IF_ERROR(g0_.Reserve(width * std::max(n, 1)));
    DIN_RETURN_IF_ERROR(g1_.Reserve(width * std::max(n, 1)));
    float* cur = g0_.get();
    float* next = g1_.get();
    const float* params = params_d_.get();
    float* grads = grads_d_.get();
    const bool synced = sync_ != nullptr && mlp.mode == Mode::kTrain;
    if (n > 0)
      DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(cur, dout, sizeof(float) * n * layers.back().out,
                                               cudaMemcpyDeviceToDevice, stream_));
    for (size_t i = layers.size(); i-- > 0;) {
      const LayerSpec& l = layers[i];
      MlpBuffers& b = mlp.layers[i];
      const bool first = i == 0 && mlp.first_weight != nullptr;
      const int in_w = first ? mlp.first_in : l.in;
      const float* w = first ? mlp.first_weight : params + l.weight;
      float* dweight = first ? mlp.first_dweight : grads + l.weight;
      const float* in = i == 0 ? x : mlp.layers[i - 1].y.get();
      const float* alpha = HasAlpha(l.act) ? params + l.alpha : nullptr;
      const size_t size = static_cast<size_t>(n) * l.out;
      if (l.act == Act::kDice) {
        DIN_RETURN_IF_ERROR(dxhat_.Reserve(std::max<size_t>(size, 1)));
        DIN_RETURN_IF_ERROR(stats_.Reserve(3 * static_cast<size_t>(l.out)));
        DIN_RETURN_IF_ERROR(
            ColumnSums<3>(n, l.out,
                          DiceBackwardF{cur, dxhat_.get(), b.s.get(), b.p.get(), b.mean.get(),
                                        b.inv_std.get(), alpha, l.out},
                          stats_.get()));
        DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(grads + l.alpha, stats_.get(),
                                                 sizeof(float) * l.out, cudaMemcpyDeviceToDevice,
                                                 stream_));
        if (synced)
          DIN_RETURN_IF_ERROR(SyncedDiceBackwardSums(b, mlp.samples, l.out, stats_.get()));
        if (size > 0)
          DIN_LAUNCH(DiceBatchNormBackwardKernel, Blocks(size), kThreads, cur, dxhat_.get(),
                     b.s.get(), b.mean.get(), b.inv_std.get(), stats_.get(),
                     mlp.mode == Mode::kTrain, n, l.out, synced ? 1.0f : static_cast<float>(n));
      } else if (l.act != Act::kNone) {
        DIN_RETURN_IF_ERROR(stats_.Reserve(l.out));
        DIN_RETURN_IF_ERROR(ColumnSums<1>(
            n, l.out, PointwiseBackwardF{l.act, cur, b.s.get(), b.y.get(), alpha, l.out},
            stats_.get()));
        if (HasAlpha(l.act))
          DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(grads + l.alpha, stats_.get(),
                                                   sizeof(float) * l.out, cudaMemcpyDeviceToDevice,
                                                   stream_));
      }
      // dW = xᵀ·dS, db = column sums of dS, dx = dS·Wᵀ (a split first layer's bias is
      // the caller's).
      if (n > 0) {
        DIN_RETURN_IF_ERROR(
            Gemm(true, false, in_w, l.out, n, in, in_w, cur, l.out, dweight, l.out));
      } else {
        DIN_CUDA_RETURN_IF_ERROR(
            cudaMemsetAsync(dweight, 0, sizeof(float) * in_w * l.out, stream_));
      }
      if (!first) DIN_RETURN_IF_ERROR(ColumnSums<1>(n, l.out, ValueF{cur, l.out}, grads + l.bias));
      if (i > 0) {
        DIN_RETURN_IF_ERROR(Gemm(false, true, n, l.in, l.out, cur, l.out, w, l.out, next, l.in));
        std::swap(cur, next);
      } else if (dx != nullptr) {
        DIN_RETURN_IF_ERROR(Gemm(false, true, n, in_w, l.out, cur, l.out, w, l.out, dx, in_w));
      }
    }
    mlp.first_grad = cur;
    DIN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::Ok();
  }

  // The activation unit with its first layer split (model_math.h): the fused weights,
  // the candidate share v_a·(W_a + W_d) + b per sample ([B x h1]), the per-position input
  // [e, v_a ⊙ e] and the MLP over it.
  Status AttentionForward(Mode mode, int B, int N, int D, const int32_t* pos_sample) {
    const LayerSpec& l0 = layout_.attention()[0];
    const int out = l0.out;
    const size_t blk = static_cast<size_t>(D) * out;
    const float* params = params_d_.get();
    DIN_RETURN_IF_ERROR(wc_.Reserve(blk));
    DIN_RETURN_IF_ERROR(w2_.Reserve(2 * blk));
    DIN_RETURN_IF_ERROR(cand_.Reserve(std::max<size_t>(1, static_cast<size_t>(B) * out)));
    DIN_RETURN_IF_ERROR(x2_.Reserve(std::max<size_t>(1, static_cast<size_t>(N) * 2 * D)));
    DIN_LAUNCH(FuseAttentionWeightsKernel, Blocks(blk), kThreads, params + l0.weight, D, out,
               wc_.get(), w2_.get());
    if (B > 0) {
      DIN_RETURN_IF_ERROR(
          Gemm(false, false, B, out, D, va_.get(), D, wc_.get(), out, cand_.get(), out));
      DIN_LAUNCH(BiasAddKernel, Blocks(static_cast<size_t>(B) * out), kThreads, cand_.get(),
                 params + l0.bias, static_cast<size_t>(B) * out, out);
    }
    if (N > 0)
      DIN_LAUNCH(PositionInputKernel, Blocks(static_cast<size_t>(N) * D), kThreads, va_.get(),
                 e_.get(), pos_sample, N, D, x2_.get());
    att_.first_weight = w2_.get();
    att_.first_in = 2 * D;
    att_.first_row_bias = cand_.get();
    att_.first_group = pos_sample;
    return MlpForward(att_, layout_.attention(), mode, x2_.get(), N);
  }

  // Backward of AttentionForward: dw [N] in; the layers' gradients (the first layer's in
  // W's blocks, as the unsplit layer has them) out, ∂v_a added to dva_, ∂e to de_.
  Status AttentionBackward(int B, int N, int D, const int32_t* pos_sample,
                           const int32_t* hist_offsets) {
    const LayerSpec& l0 = layout_.attention()[0];
    const int out = l0.out;
    const size_t blk = static_cast<size_t>(D) * out;
    float* grads = grads_d_.get();
    DIN_RETURN_IF_ERROR(dw2_.Reserve(2 * blk));
    DIN_RETURN_IF_ERROR(dwc_.Reserve(blk));
    DIN_RETURN_IF_ERROR(dcand_.Reserve(std::max<size_t>(1, static_cast<size_t>(B) * out)));
    DIN_RETURN_IF_ERROR(dx2_.Reserve(std::max<size_t>(1, static_cast<size_t>(N) * 2 * D)));
    att_.first_dweight = dw2_.get();
    DIN_RETURN_IF_ERROR(
        MlpBackward(att_, layout_.attention(), x2_.get(), N, dw_.get(), dx2_.get()));
    // No positions (a synced worker taking part): the gradients stay 0.
    if (N == 0) return Status::Ok();
    DIN_LAUNCH(SegmentSumKernel, Blocks(static_cast<size_t>(B) * out), kThreads, att_.first_grad,
               hist_offsets, B, out, dcand_.get());
    DIN_RETURN_IF_ERROR(ColumnSums<1>(B, out, ValueF{dcand_.get(), out}, grads + l0.bias));
    DIN_RETURN_IF_ERROR(
        Gemm(true, false, D, out, B, va_.get(), D, dcand_.get(), out, dwc_.get(), out));
    DIN_LAUNCH(SplitAttentionWeightGradKernel, Blocks(blk), kThreads, dwc_.get(), dw2_.get(), D,
               out, grads + l0.weight);
    DIN_LAUNCH(PositionInputBackwardEKernel, Blocks(static_cast<size_t>(N) * D), kThreads,
               dx2_.get(), va_.get(), e_.get(), pos_sample, N, D, de_.get());
    DIN_LAUNCH(PositionInputBackwardVaKernel, Blocks(static_cast<size_t>(B) * D), kThreads,
               dx2_.get(), va_.get(), e_.get(), hist_offsets, B, D, dva_.get());
    // The candidate share's input gradient dcand·(W_a + W_d)ᵀ, added to dva.
    return Gemm(false, true, B, D, out, dcand_.get(), out, wc_.get(), out, dva_.get(), D, 1.0f);
  }

  Status Forward(const BatchPlan& plan, const ModelInput& input, Mode mode) {
    const int B = plan.batch, N = plan.positions, D = layout_.item_dim();
    const int top_in = layout_.top_in();
    DIN_RETURN_IF_ERROR(va_.Reserve(std::max<size_t>(1, static_cast<size_t>(B) * D)));
    DIN_RETURN_IF_ERROR(e_.Reserve(std::max<size_t>(1, static_cast<size_t>(N) * D)));
    DIN_RETURN_IF_ERROR(w_.Reserve(std::max(N, 1)));
    DIN_RETURN_IF_ERROR(u_.Reserve(std::max<size_t>(1, static_cast<size_t>(B) * D)));
    DIN_RETURN_IF_ERROR(z_.Reserve(std::max<size_t>(1, static_cast<size_t>(B) * top_in)));
    for (size_t i = 0; i < layout_.item_fields().size(); ++i) {
      const int f = layout_.item_fields()[i], col = layout_.item_cols()[i];
      const int d = layout_.field_dims().candidate[f];
      const float* table = Table(input.candidate_fields[f].table);
      if (B > 0)
        DIN_LAUNCH(GatherRowsKernel, Blocks(static_cast<size_t>(B) * d), kThreads, table,
                   Idx(at_cand_rows_[i]), B, d, va_.get(), D, col);
      if (N > 0)
        DIN_LAUNCH(GatherRowsKernel, Blocks(static_cast<size_t>(N) * d), kThreads, table,
                   Idx(at_hist_rows_[i]), N, d, e_.get(), D, col);
    }
    const int32_t* hist_offsets = IdxI(at_hist_offsets_);
    const int32_t* pos_sample = IdxI(at_pos_sample_);
    // With a BatchStatsSync every worker takes part in the Dice sums of every layer, also
    // with no history positions or no samples at all.
    const bool synced = sync_ != nullptr && mode == Mode::kTrain;
    att_.samples = top_.samples = B;
    if (layout_.pooling() == Pooling::kAttention) {
      if (N > 0 || synced) {
        DIN_RETURN_IF_ERROR(AttentionForward(mode, B, N, D, pos_sample));
        if (N > 0)
          DIN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(w_.get(), att_.layers.back().y.get(),
                                                   sizeof(float) * N, cudaMemcpyDeviceToDevice,
                                                   stream_));
        if (layout_.softmax() && B > 0)
          DIN_LAUNCH(SegmentSoftmaxKernel, Blocks(B), kThreads, w_.get(), hist_offsets, B);
      }
    } else if (B > 0) {
      DIN_LAUNCH(FixedWeightsKernel, Blocks(B), kThreads, w_.get(), hist_offsets, B,
                 layout_.pooling() == Pooling::kMean);
    }
    if (B > 0) {
      DIN_LAUNCH(PoolKernel, Blocks(static_cast<size_t>(B) * D), kThreads, w_.get(), e_.get(),
                 hist_offsets, B, D, u_.get());
      for (size_t s = 0; s < layout_.segments().size(); ++s) {
        const TopSegment& seg = layout_.segments()[s];
        DIN_LAUNCH(SumPoolRowsKernel, Blocks(static_cast<size_t>(B) * seg.dim), kThreads,
                   Table(Field(input, seg).table), Idx(at_seg_offsets_[s]), Idx(at_seg_rows_[s]), B,
                   seg.dim, z_.get(), top_in, seg.col);
      }
      DIN_LAUNCH(InterestColumnsKernel, Blocks(static_cast<size_t>(B) * D), kThreads, u_.get(),
                 va_.get(), B, D, z_.get(), top_in, layout_.u_col());
    }
    DIN_RETURN_IF_ERROR(MlpForward(top_, layout_.top(), mode, z_.get(), B));
    DIN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::Ok();
  }

  Status Backward(const BatchPlan& plan, const ModelInput& input) {
    const int B = plan.batch, N = plan.positions, D = layout_.item_dim();
    const int top_in = layout_.top_in(), uc = layout_.u_col();
    DIN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        grads_d_.get(), 0, sizeof(float) * std::max<size_t>(1, params_.size()), stream_));
    if (table_offsets_.back() > 0)
      DIN_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(table_grads_d_.get(), 0, sizeof(float) * table_offsets_.back(), stream_));
    DIN_RETURN_IF_ERROR(loss_d_.Reserve(1));
    // Without samples only a synced worker has work: its part of the Dice sums.
    if (B == 0) DIN_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(loss_d_.get(), 0, sizeof(float), stream_));
    if (B == 0 && sync_ == nullptr) return Status::Ok();
    const size_t b1 = std::max(B, 1);
    DIN_RETURN_IF_ERROR(dlogit_.Reserve(b1));
    DIN_RETURN_IF_ERROR(dz_.Reserve(b1 * top_in));
    DIN_RETURN_IF_ERROR(du_.Reserve(b1 * D));
    DIN_RETURN_IF_ERROR(dva_.Reserve(b1 * D));
    DIN_RETURN_IF_ERROR(de_.Reserve(std::max<size_t>(1, static_cast<size_t>(N) * D)));
    if (B > 0)
      DIN_LAUNCH_SYNC(LossKernel, 1, kThreads, top_.layers.back().y.get(), labels_d_.get(), B,
                      dlogit_.get(), loss_d_.get());
    DIN_RETURN_IF_ERROR(MlpBackward(top_, layout_.top(), z_.get(), B, dlogit_.get(), dz_.get()));
    const int32_t* hist_offsets = IdxI(at_hist_offsets_);
    const int32_t* pos_sample = IdxI(at_pos_sample_);
    if (B == 0) {
      if (layout_.pooling() == Pooling::kAttention) {
        DIN_RETURN_IF_ERROR(dw_.Reserve(1));
        DIN_RETURN_IF_ERROR(AttentionBackward(B, N, D, pos_sample, hist_offsets));
      }
      return Status::Ok();
    }
    for (size_t s = 0; s < layout_.segments().size() && !deterministic_; ++s) {
      const TopSegment& seg = layout_.segments()[s];
      DIN_LAUNCH(ScatterPooledKernel, Blocks(static_cast<size_t>(B) * seg.dim), kThreads, dz_.get(),
                 top_in, seg.col, Idx(at_seg_offsets_[s]), Idx(at_seg_rows_[s]), B, seg.dim,
                 TableGrad(Field(input, seg).table));
    }
    DIN_LAUNCH(InterestBackwardKernel, Blocks(static_cast<size_t>(B) * D), kThreads, dz_.get(),
               top_in, uc, u_.get(), va_.get(), B, D, du_.get(), dva_.get());
    if (N > 0)
      DIN_LAUNCH(PoolBackwardKernel, Blocks(static_cast<size_t>(N) * D), kThreads, w_.get(),
                 du_.get(), pos_sample, N, D, de_.get());
    if (layout_.pooling() == Pooling::kAttention && (N > 0 || sync_ != nullptr)) {
      DIN_RETURN_IF_ERROR(dw_.Reserve(std::max(N, 1)));
      if (N > 0) {
        DIN_LAUNCH(WeightGradKernel, Blocks(N), kThreads, du_.get(), e_.get(), pos_sample, N, D,
                   dw_.get());
        if (layout_.softmax())
          DIN_LAUNCH(SoftmaxBackwardKernel, Blocks(B), kThreads, w_.get(), dw_.get(), hist_offsets,
                     B);
      }
      DIN_RETURN_IF_ERROR(AttentionBackward(B, N, D, pos_sample, hist_offsets));
    }
    for (const ScatterIndex& ix : deterministic_ ? scatter_ : std::vector<ScatterIndex>{})
      DIN_LAUNCH(OrderedScatterKernel, Blocks(static_cast<size_t>(ix.n_rows) * ix.d), kThreads,
                 Idx(ix.at_rows), Idx(ix.at_offsets), codes_d_.get(), ix.n_rows, ix.d, dva_.get(),
                 de_.get(), dz_.get(), TableGrad(ix.table));
    for (size_t i = 0; i < layout_.item_fields().size() && !deterministic_; ++i) {
      const int f = layout_.item_fields()[i], col = layout_.item_cols()[i];
      const int d = layout_.field_dims().candidate[f];
      float* tg = TableGrad(input.candidate_fields[f].table);
      DIN_LAUNCH(ScatterRowsKernel, Blocks(static_cast<size_t>(B) * d), kThreads, dva_.get(), D,
                 col, Idx(at_cand_rows_[i]), B, d, tg);
      if (N > 0)
        DIN_LAUNCH(ScatterRowsKernel, Blocks(static_cast<size_t>(N) * d), kThreads, de_.get(), D,
                   col, Idx(at_hist_rows_[i]), N, d, tg);
    }
    DIN_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return Status::Ok();
  }

  // Results to host memory (empty host arrays, e.g. no Dice layer, copy nothing).
  Status DownloadResults(const ModelInput& input, bool train, float* loss) {
    const int B = static_cast<int>(input.batch_size);
    DIN_RETURN_IF_ERROR(
        StageDownload(logits_.data(), top_.layers.back().y.get(), sizeof(float) * B));
    if (train) {
      DIN_RETURN_IF_ERROR(
          StageDownload(grads_.data(), grads_d_.get(), sizeof(float) * grads_.size()));
      DIN_RETURN_IF_ERROR(
          StageDownload(running_.data(), running_d_.get(), sizeof(float) * running_.size()));
      for (size_t t = 0; t < input.tables.size(); ++t)
        DIN_RETURN_IF_ERROR(StageDownload(table_grads_[t].data(), TableGrad(t),
                                          sizeof(float) * table_grads_[t].size()));
      DIN_RETURN_IF_ERROR(StageDownload(loss, loss_d_.get(), sizeof(float)));
    }
    return FinishDownloads();
  }

  const int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer<float> params_d_, grads_d_, running_d_, tables_d_, table_grads_d_, labels_d_;
  DeviceBuffer<uint32_t> idx_d_;
  std::vector<uint32_t> idx_host_;
  PinnedStaging staging_up_, staging_down_;
  struct PendingDownload {
    void* dst;
    const char* region;
    size_t bytes;
  };
  std::vector<PendingDownload> pending_;
  // Deterministic scatter: per table its unique rows, their contributions' offsets (both
  // in idx_host_) and the contributions' codes.
  bool deterministic_ = true;
  struct ScatterIndex {
    int table = 0, d = 0, n_rows = 0;
    size_t at_rows = 0, at_offsets = 0;
  };
  std::vector<ScatterIndex> scatter_;
  std::vector<uint64_t> codes_host_;
  std::vector<std::pair<uint32_t, uint64_t>> contrib_;
  DeviceBuffer<uint64_t> codes_d_;
  std::vector<size_t> table_offsets_;
  size_t at_hist_offsets_ = 0, at_pos_sample_ = 0;
  std::vector<size_t> at_hist_rows_, at_cand_rows_, at_seg_offsets_, at_seg_rows_;
  DeviceBuffer<float> va_, e_, w_, u_, z_;
  DeviceBuffer<float> dlogit_, dz_, du_, dva_, de_, dw_, loss_d_;
  DeviceBuffer<float> g0_, g1_, dxhat_, stats_, partials_;
  // The activation unit's split first layer: fused weights, candidate share, per-position
  // input, and their gradients.
  DeviceBuffer<float> wc_, w2_, cand_, x2_, dwc_, dw2_, dcand_, dx2_;
  Mlp att_, top_;
  // Dice statistics over the workers (nullptr: this batch's own) and host scratch for it.
  BatchStatsSync* sync_ = nullptr;
  std::vector<float> host_stats_;
  std::vector<double> host_sums_;
};

}  // namespace

int CudaDeviceCount() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // reset the runtime's last-error slot
    return 0;
  }
  return count;
}

Result<std::unique_ptr<ModelBackend>> CreateCudaBackend(ModelLayout layout, int device) {
  const int count = CudaDeviceCount();
  if (count == 0) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    return Status::Unavailable(std::string("the CUDA backend was requested but no CUDA device is "
                                           "usable: ") +
                               (err != cudaSuccess ? cudaGetErrorString(err) : "no device found"));
  }
  if (device < 0 || device >= count)
    return Status::InvalidArgument("CUDA device " + std::to_string(device) + " does not exist (" +
                                   std::to_string(count) + " found)");
  auto backend = std::make_unique<CudaBackend>(std::move(layout), device);
  DIN_RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<ModelBackend>(std::move(backend));
}

Result<double> CudaSgemmPeakGflops(int device) {
  if (CudaDeviceCount() <= device) return Status::Unavailable("no CUDA device for the SGEMM peak");
  DIN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  const int n = 8192;
  DeviceBuffer<float> a, b, c;
  DIN_RETURN_IF_ERROR(a.Reserve(static_cast<size_t>(n) * n));
  DIN_RETURN_IF_ERROR(b.Reserve(static_cast<size_t>(n) * n));
  DIN_RETURN_IF_ERROR(c.Reserve(static_cast<size_t>(n) * n));
  DIN_CUDA_RETURN_IF_ERROR(cudaMemset(a.get(), 0, sizeof(float) * n * n));
  DIN_CUDA_RETURN_IF_ERROR(cudaMemset(b.get(), 0, sizeof(float) * n * n));
  cublasHandle_t h = nullptr;
  DIN_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h));
  std::unique_ptr<cublasContext, decltype(&cublasDestroy)> guard(h, &cublasDestroy);
  DIN_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  const float one = 1.0f, zero = 0.0f;
  auto run = [&]() {
    return cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.get(), n, b.get(), n, &zero,
                       c.get(), n);
  };
  DIN_CUBLAS_RETURN_IF_ERROR(run());
  DIN_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  const int reps = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) DIN_CUBLAS_RETURN_IF_ERROR(run());
  DIN_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * static_cast<double>(n) * reps / s / 1e9;
}

}  // namespace din::model
