// CUDA emulation on the CPU: enough of the CUDA runtime and of cuBLAS for the CUDA backend's
// own source (cuda_backend.cu) to compile as C++ and run, so that its kernels are tested
// where no GPU is (DIN_CUDA_EMULATION). Not a general CUDA implementation.
//
// Kernels run synchronously at launch. A kernel launched as a loop kernel runs its
// threads one after the other on the launching thread, its blocks in a random order
// (another on each launch, so float atomics add in varying orders as on a GPU). A kernel
// launched as a barrier kernel runs one block at a time, so __shared__ (static storage)
// belongs to the running block; the block's threads are fibers run in threadIdx order
// from one __syncthreads to the next (a missing __syncthreads shows as a wrong value), or
// under ThreadSanitizer (or DIN_CUDA_EMU_SCHEDULE=concurrent) real threads meeting at a
// std::barrier. A loop kernel that calls __syncthreads stops the process.
//
// What a GPU would refuse is refused: an empty grid or block, more than 1024 threads per
// block, grid.y or grid.z above 65535, more dynamic shared memory than 48 KiB. Memory from
// cudaMalloc is tracked: a copy whose direction does not match its pointers, a range past
// the end of an allocation, a host pointer passed to a kernel or a cuBLAS call and a null
// host pointer all fail with a message naming the call (cudaGetErrorString of the error
// returns it) that is also printed to stderr. DIN_CUDA_EMU_FAIL_LAUNCH=KERNEL makes every
// launch of KERNEL fail (for tests of the error paths); DIN_CUDA_EMU_DEVICES=N sets the
// device count (default 1).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one at a time: static storage is the running block's shared memory.
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaHostAllocDefault = 0;

// Index variables of the emulated thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
template <typename T>
cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// Device-side helpers the kernels use.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float atomicAdd(float* address, float v) {
  return std::atomic_ref<float>(*address).fetch_add(v, std::memory_order_relaxed);
}
inline int atomicAdd(int* address, int v) {
  return std::atomic_ref<int>(*address).fetch_add(v, std::memory_order_relaxed);
}
void __syncthreads();

namespace din::cuda_emu {

enum class LaunchKind { kLoop, kBarrier };

// True when [p, p + bytes) lies inside one cudaMalloc allocation.
bool IsDeviceRange(const void* p, size_t bytes);
// True when p points into a cudaMalloc allocation (or one past its end).
bool IsDevicePointer(const void* p);
// Records an error (sticky until cudaGetLastError) with its message, printed to stderr.
cudaError_t Fail(cudaError_t err, const std::string& message);
// Validates the configuration and sets the index variables around each call of body().
// body is called once per emulated thread.
void RunKernel(const char* name, LaunchKind kind, dim3 grid, dim3 block, size_t shmem,
               cudaStream_t stream, void (*body)(void*), void* ctx);
// Number of kernels launched so far (all threads), for tests.
uint64_t LaunchCount();

template <typename T>
bool CheckArg(const char* kernel, int index, const T& arg) {
  if constexpr (std::is_pointer_v<T>) {
    if (arg != nullptr && !IsDevicePointer(arg)) {
      Fail(cudaErrorIllegalAddress, std::string("kernel ") + kernel + ": argument " +
                                        std::to_string(index) +
                                        " is a pointer outside device memory");
      return false;
    }
  }
  return true;
}

template <typename F, typename... Args>
void Launch(const char* name, LaunchKind kind, dim3 grid, dim3 block, size_t shmem,
            cudaStream_t stream, F kernel, Args... args) {
  int i = 0;
  if (!(CheckArg(name, i++, args) && ...)) return;
  struct Ctx {
    F* kernel;
    std::tuple<Args...>* args;
  };
  std::tuple<Args...> tuple(std::move(args)...);
  Ctx ctx{&kernel, &tuple};
  RunKernel(
      name, kind, grid, block, shmem, stream,
      [](void* p) {
        Ctx& c = *static_cast<Ctx*>(p);
        std::apply(*c.kernel, *c.args);
      },
      &ctx);
}

}  // namespace din::cuda_emu

// The launch in place of kernel<<<grid, block, shmem, stream>>>(args...).
#define DIN_CUDA_EMU_LAUNCH_IMPL(kind, kernel, grid, block, shmem, stream, ...)           \
  ::din::cuda_emu::Launch(                                                                \
      #kernel, kind, grid, block, shmem, stream, [](auto... din_a) { kernel(din_a...); }, \
      __VA_ARGS__)
