// Replaces the global operator new of din_worker so that every C++ allocation is
// 64-byte aligned.
//
// Why: the CPU backend's vectorised reductions (Eigen, e.g. the column sums behind the
// bias gradients) split their work at packet boundaries that depend on where a buffer
// starts. With glibc's 16-byte alignment the same batch can give gradients that differ
// in the last bit between two processes, whose heaps are laid out differently (ZeroMQ's
// threads allocate concurrently). Aligning every buffer to the widest vector (AVX-512)
// makes a one-worker run with a fixed seed bit-identical to the next. The cost is a
// little memory per allocation.
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {

constexpr std::size_t kAlign = 64;

void* Allocate(std::size_t n) noexcept {
  const std::size_t size = n == 0 ? kAlign : (n + kAlign - 1) / kAlign * kAlign;
  return std::aligned_alloc(kAlign, size);
}

void* AllocateOrThrow(std::size_t n) {
  void* p = Allocate(n);
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return AllocateOrThrow(n); }
void* operator new[](std::size_t n) { return AllocateOrThrow(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return Allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return Allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
