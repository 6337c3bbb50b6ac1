// The CUDA emulation's runtime: tracked device memory, streams and events that complete at
// once, kernel launches on host threads and a reference SGEMM. See cuda_emu.h.
#include "worker/model/cuda_emu/cuda_emu.h"

#include <ucontext.h>
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "worker/model/cuda_emu/cublas_v2.h"

namespace din::cuda_emu {
namespace {

struct Arena {
  std::mutex mu;
  std::map<uintptr_t, size_t> device;  // start → bytes
  std::map<uintptr_t, size_t> pinned;
};
Arena& arena() {
  static Arena* a = new Arena();  // outlives static destructors that free buffers
  return *a;
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local cudaError_t last_failure = cudaSuccess;
thread_local std::string last_message;
thread_local int current_device = 0;
std::atomic<uint64_t> launches{0};

int DeviceCount() {
  const char* env = std::getenv("DIN_CUDA_EMU_DEVICES");
  return env != nullptr ? std::atoi(env) : 1;
}

// The allocation holding [p, p + bytes), or false.
bool Find(const std::map<uintptr_t, size_t>& m, const void* p, size_t bytes, bool allow_end) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = m.upper_bound(a);
  if (it == m.begin()) return false;
  --it;
  const uintptr_t end = it->first + it->second;
  if (a > end || (a == end && !allow_end)) return false;
  return bytes <= end - a;
}

std::string Ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", p);
  return buf;
}

#if defined(__SANITIZE_ADDRESS__)
#define DIN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DIN_EMU_ASAN 1
#endif
#endif
#if defined(DIN_EMU_ASAN)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom,
                                               size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                size_t* size_old);
#endif

// A barrier kernel's block runs either
//  - serially (the default): each emulated thread is a fiber (ucontext) on the launching
//    thread; fibers run one at a time in threadIdx order, each until its next
//    __syncthreads, so that a missing __syncthreads shows as a wrong value,
//    deterministically;
//  - concurrently (under ThreadSanitizer, or DIN_CUDA_EMU_SCHEDULE=concurrent): each
//    emulated thread is a real thread and __syncthreads is a std::barrier, so that
//    ThreadSanitizer sees the accesses a missing __syncthreads leaves unordered.
struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  bool done = false;
#if defined(DIN_EMU_ASAN)
  void* fake_stack = nullptr;
#endif
};
constexpr size_t kFiberStack = 256 * 1024;
struct FiberBlock {
  ucontext_t main;
  std::vector<Fiber> fibers;
  unsigned running = 0;
  void (*body)(void*) = nullptr;
  void* ctx = nullptr;
#if defined(DIN_EMU_ASAN)
  const void* main_bottom = nullptr;
  size_t main_size = 0;
#endif
};
thread_local FiberBlock* fiber_block = nullptr;
thread_local std::barrier<>* block_barrier = nullptr;
thread_local const char* current_kernel = nullptr;

void FiberEntry() {
  FiberBlock& fb = *fiber_block;
#if defined(DIN_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &fb.main_bottom, &fb.main_size);
#endif
  fb.body(fb.ctx);
  fb.fibers[fb.running].done = true;
#if defined(DIN_EMU_ASAN)
  __sanitizer_start_switch_fiber(nullptr, fb.main_bottom, fb.main_size);
#endif
  // Returns to uc_link (the scheduler).
}

// From fiber: back to the scheduler, resumed at the next phase.
void FiberYield() {
  FiberBlock& fb = *fiber_block;
  Fiber& f = fb.fibers[fb.running];
#if defined(DIN_EMU_ASAN)
  __sanitizer_start_switch_fiber(&f.fake_stack, fb.main_bottom, fb.main_size);
#endif
  swapcontext(&f.ctx, &fb.main);
#if defined(DIN_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &fb.main_bottom, &fb.main_size);
#endif
}

// A fiber ready to run FiberEntry. Out of line: getcontext returns twice, and no loop
// variable of the caller may live across it.
[[gnu::noinline]] void InitFiber(Fiber& f, ucontext_t* main) {
  if (!f.stack) f.stack.reset(new char[kFiberStack]);  // uninitialised: no page touched
  f.done = false;
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.get();
  f.ctx.uc_stack.ss_size = kFiberStack;
  f.ctx.uc_link = main;
  makecontext(&f.ctx, FiberEntry, 0);
}

// Runs one block of n fibers to completion; index variables set before each resume.
void RunFiberBlock(FiberBlock& fb, unsigned n, dim3 block) {
  for (unsigned t = 0; t < n; ++t) InitFiber(fb.fibers[t], &fb.main);
  for (bool any = true; any;) {
    any = false;
    for (unsigned t = 0; t < n; ++t) {
      Fiber& f = fb.fibers[t];
      if (f.done) continue;
      fb.running = t;
      threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
#if defined(DIN_EMU_ASAN)
      void* fake = nullptr;
      __sanitizer_start_switch_fiber(&fake, f.stack.get(), kFiberStack);
#endif
      swapcontext(&fb.main, &f.ctx);
#if defined(DIN_EMU_ASAN)
      __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
      any = any || !f.done;
    }
  }
}

bool ConcurrentBlocks() {
  if (const char* env = std::getenv("DIN_CUDA_EMU_SCHEDULE"))
    return std::strcmp(env, "concurrent") == 0;
#if defined(__SANITIZE_THREAD__)
  return true;  // ThreadSanitizer checks real concurrency for races
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  return true;
#endif
#endif
  return false;
}

std::mutex barrier_launch_mu;  // static __shared__ storage: one barrier kernel at a time

}  // namespace

bool IsDeviceRange(const void* p, size_t bytes) {
  std::lock_guard lock(arena().mu);
  return Find(arena().device, p, bytes, false);
}
bool IsDevicePointer(const void* p) {
  std::lock_guard lock(arena().mu);
  return Find(arena().device, p, 0, true);
}

cudaError_t Fail(cudaError_t err, const std::string& message) {
  last_error = err;
  last_failure = err;
  last_message = "CUDA emulation: " + message;
  std::fprintf(stderr, "%s\n", last_message.c_str());
  return err;
}

uint64_t LaunchCount() { return launches.load(); }

void RunKernel(const char* name, LaunchKind kind, dim3 grid, dim3 block, size_t shmem,
               cudaStream_t /*stream*/, void (*body)(void*), void* ctx) {
  const std::string k = std::string("kernel ") + name + ": ";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    Fail(cudaErrorInvalidConfiguration, k + "empty grid or block");
    return;
  }
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
    Fail(cudaErrorInvalidConfiguration,
         k + std::to_string(threads) + " threads per block (at most 1024)");
    return;
  }
  if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    Fail(cudaErrorInvalidConfiguration, k + "grid (" + std::to_string(grid.x) + ", " +
                                            std::to_string(grid.y) + ", " + std::to_string(grid.z) +
                                            ") beyond the limits");
    return;
  }
  if (shmem > 48 * 1024) {
    Fail(cudaErrorInvalidConfiguration,
         k + std::to_string(shmem) + " bytes of dynamic shared memory (at most 49152)");
    return;
  }
  // Fault injection for tests of the error paths: the named kernel fails as a kernel
  // that faulted would.
  if (const char* fail = std::getenv("DIN_CUDA_EMU_FAIL_LAUNCH");
      fail != nullptr && std::strcmp(fail, name) == 0) {
    Fail(cudaErrorLaunchFailure, k + "failed (DIN_CUDA_EMU_FAIL_LAUNCH)");
    return;
  }
  launches.fetch_add(1);
  auto run_block = [&](unsigned bx, unsigned by, unsigned bz, unsigned t) {
    blockIdx = dim3(bx, by, bz);
    threadIdx = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
    body(ctx);
  };
  auto set_dims = [&] {
    gridDim = grid;
    blockDim = block;
    current_kernel = name;
  };
  if (kind == LaunchKind::kLoop) {
    set_dims();
    // Blocks run in a different order on every launch, as a GPU may run them: a result
    // that depends on it (float atomics, a race between blocks) varies between runs.
    const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
    std::vector<uint64_t> order(blocks);
    std::iota(order.begin(), order.end(), uint64_t{0});
    std::mt19937_64 rng(launches.load() * 0x9e3779b97f4a7c15ull);
    std::shuffle(order.begin(), order.end(), rng);
    for (uint64_t b : order)
      for (unsigned t = 0; t < threads; ++t)
        run_block(static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                  static_cast<unsigned>(b / grid.x / grid.y), t);
    current_kernel = nullptr;
    return;
  }
  std::lock_guard launch_lock(barrier_launch_mu);
  const auto n = static_cast<unsigned>(threads);
  if (!ConcurrentBlocks()) {
    set_dims();
    // Fibers (and their stacks) are kept for the thread's next barrier launch.
    static thread_local FiberBlock fb;
    if (fb.fibers.size() < n) fb.fibers.resize(n);
    fb.body = body;
    fb.ctx = ctx;
    fiber_block = &fb;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          blockIdx = dim3(bx, by, bz);
          RunFiberBlock(fb, n, block);
        }
    fiber_block = nullptr;
    current_kernel = nullptr;
    return;
  }
  std::barrier<> bar(n);
  std::vector<std::jthread> workers;
  workers.reserve(n);
  for (unsigned t = 0; t < n; ++t)
    workers.emplace_back([&, t] {
      set_dims();
      block_barrier = &bar;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            run_block(bx, by, bz, t);
            bar.arrive_and_wait();  // the block ends together: the next reuses __shared__
          }
      block_barrier = nullptr;
    });
  workers.clear();  // joins
}

}  // namespace din::cuda_emu

using din::cuda_emu::Fail;

void __syncthreads() {
  if (din::cuda_emu::block_barrier != nullptr) {
    din::cuda_emu::block_barrier->arrive_and_wait();
    return;
  }
  if (din::cuda_emu::fiber_block == nullptr) {
    std::fprintf(stderr,
                 "CUDA emulation: kernel %s calls __syncthreads but was launched as a loop "
                 "kernel (launch it with the barrier launch)\n",
                 din::cuda_emu::current_kernel != nullptr ? din::cuda_emu::current_kernel : "?");
    std::abort();
  }
  din::cuda_emu::FiberYield();
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = din::cuda_emu::DeviceCount();
  if (*count == 0) return Fail(cudaErrorNoDevice, "no emulated device (DIN_CUDA_EMU_DEVICES=0)");
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= din::cuda_emu::DeviceCount())
    return Fail(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(device) + ")");
  din::cuda_emu::current_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = din::cuda_emu::current_device;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() { return std::exchange(din::cuda_emu::last_error, cudaSuccess); }
cudaError_t cudaPeekAtLastError() { return din::cuda_emu::last_error; }
const char* cudaGetErrorString(cudaError_t err) {
  if (err == cudaSuccess) return "no error";
  if (err == din::cuda_emu::last_failure) return din::cuda_emu::last_message.c_str();
  return "CUDA emulation error";
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (ptr == nullptr) return Fail(cudaErrorInvalidValue, "cudaMalloc: null result pointer");
  const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded);
  if (p == nullptr) return Fail(cudaErrorMemoryAllocation, "cudaMalloc: out of memory");
  // Uninitialised device memory reads as NaN, so a kernel that reads before anything
  // wrote shows in the results.
  std::memset(p, 0xff, rounded);
  std::lock_guard lock(din::cuda_emu::arena().mu);
  din::cuda_emu::arena().device[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  {
    std::lock_guard lock(din::cuda_emu::arena().mu);
    if (din::cuda_emu::arena().device.erase(reinterpret_cast<uintptr_t>(ptr)) == 0)
      return Fail(cudaErrorInvalidDevicePointer,
                  "cudaFree(" + din::cuda_emu::Ptr(ptr) + "): not a device allocation");
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (p == nullptr) return Fail(cudaErrorMemoryAllocation, "cudaMallocHost: out of memory");
  std::lock_guard lock(din::cuda_emu::arena().mu);
  din::cuda_emu::arena().pinned[reinterpret_cast<uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  {
    std::lock_guard lock(din::cuda_emu::arena().mu);
    if (din::cuda_emu::arena().pinned.erase(reinterpret_cast<uintptr_t>(ptr)) == 0)
      return Fail(cudaErrorInvalidValue,
                  "cudaFreeHost(" + din::cuda_emu::Ptr(ptr) + "): not a pinned allocation");
  }
  std::free(ptr);
  return cudaSuccess;
}

namespace {
const char* KindName(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost:
      return "HostToHost";
    case cudaMemcpyHostToDevice:
      return "HostToDevice";
    case cudaMemcpyDeviceToHost:
      return "DeviceToHost";
    case cudaMemcpyDeviceToDevice:
      return "DeviceToDevice";
  }
  return "?";
}
// The side a pointer of a copy must be on, checked over the whole range.
cudaError_t CheckSide(const char* call, const char* which, const void* p, size_t bytes, bool device,
                      cudaMemcpyKind kind) {
  const std::string at = std::string(call) + "(" + KindName(kind) + ", " + std::to_string(bytes) +
                         " bytes): " + which + " " + din::cuda_emu::Ptr(p);
  if (p == nullptr) return Fail(cudaErrorInvalidValue, at + " is null");
  if (device) {
    if (!din::cuda_emu::IsDeviceRange(p, bytes))
      return Fail(cudaErrorInvalidValue,
                  at + (din::cuda_emu::IsDevicePointer(p) ? " runs past its device allocation"
                                                          : " is not device memory"));
  } else if (din::cuda_emu::IsDevicePointer(p)) {
    return Fail(cudaErrorInvalidValue, at + " is device memory, expected host memory");
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t /*stream*/) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (cudaError_t e = CheckSide("cudaMemcpy", "destination", dst, bytes, dst_dev, kind);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = CheckSide("cudaMemcpy", "source", src, bytes, src_dev, kind);
      e != cudaSuccess)
    return e;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  return cudaMemsetAsync(ptr, value, bytes, nullptr);
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t /*stream*/) {
  if (bytes == 0) return cudaSuccess;
  if (cudaError_t e =
          CheckSide("cudaMemset", "destination", ptr, bytes, true, cudaMemcpyDeviceToDevice);
      e != cudaSuccess)
    return e;
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}

// Work runs at submission: synchronisation returns the sticky error, if any.
cudaError_t cudaDeviceSynchronize() { return din::cuda_emu::last_error; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return din::cuda_emu::last_error; }

struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  *stream = new CUstream_st{flags};
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return din::cuda_emu::last_error; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

// ---- cuBLAS --------------------------------------------------------------------------

struct cublasContext {
  cudaStream_t stream = nullptr;
};
cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext{};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t) {
  return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : CUBLAS_STATUS_SUCCESS;
}

namespace {
// A refused cuBLAS call returns its status only; the runtime's last error stays as it is.
cublasStatus_t BlasFail(const std::string& message) {
  std::fprintf(stderr, "CUDA emulation: cublasSgemm: %s\n", message.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}
// A stored column-major matrix rows × cols with leading dimension ld must lie in device
// memory; ld must be at least rows (and at least 1).
bool MatrixOk(const char* name, const float* p, int rows, int cols, int ld, std::string* why) {
  if (ld < std::max(1, rows)) {
    *why = std::string(name) + ": ld " + std::to_string(ld) + " < rows " + std::to_string(rows);
    return false;
  }
  if (rows == 0 || cols == 0) return true;
  const size_t extent = (static_cast<size_t>(ld) * (cols - 1) + rows) * sizeof(float);
  if (!din::cuda_emu::IsDeviceRange(p, extent)) {
    *why = std::string(name) + " " + din::cuda_emu::Ptr(p) + " (" + std::to_string(rows) + "x" +
           std::to_string(cols) + ", ld " + std::to_string(ld) + ")" +
           (din::cuda_emu::IsDevicePointer(p) ? " runs past its device allocation"
                                              : " is not device memory");
    return false;
  }
  return true;
}
}  // namespace

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float* alpha,
                           const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return BlasFail("negative size");
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  std::string why;
  // A is stored m×k (N) or k×m (T); B k×n or n×k; C m×n.
  if (!MatrixOk("A", A, ta ? k : m, ta ? m : k, lda, &why) ||
      !MatrixOk("B", B, tb ? n : k, tb ? k : n, ldb, &why) || !MatrixOk("C", C, m, n, ldc, &why))
    return BlasFail(why);
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const float a = *alpha, b = *beta;
  std::vector<float> col(m);
  std::vector<float> bcol(k);
  for (int j = 0; j < n; ++j) {
    for (int l = 0; l < k; ++l)
      bcol[l] = tb ? B[j + static_cast<size_t>(l) * ldb] : B[l + static_cast<size_t>(j) * ldb];
    if (!ta) {
      std::fill(col.begin(), col.end(), 0.0f);
      for (int l = 0; l < k; ++l) {
        const float* acol = A + static_cast<size_t>(l) * lda;
        const float bl = bcol[l];
        for (int i = 0; i < m; ++i) col[i] += acol[i] * bl;
      }
    } else {
      for (int i = 0; i < m; ++i) {
        const float* arow = A + static_cast<size_t>(i) * lda;
        float s = 0.0f;
        for (int l = 0; l < k; ++l) s += arow[l] * bcol[l];
        col[i] = s;
      }
    }
    float* c = C + static_cast<size_t>(j) * ldc;
    // beta = 0: C is not read (it may hold anything, NaN included), as in cuBLAS.
    for (int i = 0; i < m; ++i) c[i] = b == 0.0f ? a * col[i] : a * col[i] + b * c[i];
  }
  return CUBLAS_STATUS_SUCCESS;
}
