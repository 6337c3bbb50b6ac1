#include "ps/huge_buffer.h"

#include <sys/mman.h>

#include <glog/logging.h>

namespace din {
namespace {
constexpr size_t kHuge = size_t{2} << 20;
}

HugeBuffer::HugeBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  // Ranges of 2 MiB or more are mapped with 2 MiB of slack so that data_ can start on a
  // huge-page boundary; smaller ones would not get a huge page anyway.
  const bool huge = bytes >= kHuge;
  map_bytes_ = huge ? bytes + kHuge : bytes;
  map_ = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  PCHECK(map_ != MAP_FAILED) << "cannot map " << map_bytes_ << " bytes";
  auto addr = reinterpret_cast<uintptr_t>(map_);
  if (huge) {
    addr = (addr + kHuge - 1) & ~(kHuge - 1);
    // Advice only: without transparent huge pages the memory works with small pages.
    madvise(reinterpret_cast<void*>(addr), (bytes + kHuge - 1) & ~(kHuge - 1), MADV_HUGEPAGE);
  }
  data_ = reinterpret_cast<std::byte*>(addr);
}

HugeBuffer& HugeBuffer::operator=(HugeBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(map_, other.map_);
    std::swap(map_bytes_, other.map_bytes_);
  }
  return *this;
}

HugeBuffer::~HugeBuffer() { Release(); }

void HugeBuffer::Release() {
  if (map_ != nullptr) munmap(map_, map_bytes_);
  map_ = nullptr;
  data_ = nullptr;
  bytes_ = map_bytes_ = 0;
}

}  // namespace din
