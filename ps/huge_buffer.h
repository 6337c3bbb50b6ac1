// Zero-filled anonymous memory for the shard store, backed by transparent huge pages
// where the kernel allows them (MADV_HUGEPAGE on 2 MiB-aligned ranges). Rows and index
// slots are touched at random; with 4 KiB pages nearly every access of a large shard is a
// TLB miss, and every first touch a page fault.
//
// Thread safety: none (owned by one shard).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace din {

class HugeBuffer {
 public:
  HugeBuffer() = default;
  // Maps `bytes` of zeroed memory; aborts (CHECK) when the kernel refuses, like new.
  explicit HugeBuffer(size_t bytes);
  ~HugeBuffer();
  HugeBuffer(HugeBuffer&& other) noexcept { *this = std::move(other); }
  HugeBuffer& operator=(HugeBuffer&& other) noexcept;
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  void Release();
  std::byte* data_ = nullptr;
  size_t bytes_ = 0;
  void* map_ = nullptr;  // the mapping, which may start before data_ (alignment)
  size_t map_bytes_ = 0;
};

}  // namespace din
