#include "ps/admission_sketch.h"

#include <algorithm>
#include <cstring>

#include "common/hash.h"

namespace din {

AdmissionSketch::AdmissionSketch(uint64_t bytes, uint32_t depth, uint64_t seed)
    : depth_(std::clamp<uint32_t>(depth, 1, kMaxDepth)),
      width_(std::max<uint64_t>(bytes / sizeof(uint32_t) / depth_, 1)),
      cells_(width_ * depth_, 0) {
  seeds_.resize(depth_);
  for (uint32_t i = 0; i < depth_; ++i) seeds_[i] = Mix64(seed ^ (0xad317c0deULL + i));
}

uint64_t AdmissionSketch::Cell(uint64_t key, uint32_t i) const {
  const uint64_t h = Mix64(key ^ seeds_[i]);
  return i * width_ + static_cast<uint64_t>((static_cast<__uint128_t>(h) * width_) >> 64);
}

uint32_t AdmissionSketch::Estimate(uint64_t key) const {
  uint32_t m = UINT32_MAX;
  for (uint32_t i = 0; i < depth_; ++i) m = std::min(m, cells_[Cell(key, i)]);
  return m;
}

uint32_t AdmissionSketch::Add(uint64_t key, uint32_t count) {
  uint64_t cell[kMaxDepth];
  const uint32_t d = depth_;
  uint32_t m = UINT32_MAX;
  for (uint32_t i = 0; i < d; ++i) {
    cell[i] = Cell(key, i);
    m = std::min(m, cells_[cell[i]]);
  }
  const uint32_t next = m > UINT32_MAX - count ? UINT32_MAX : m + count;
  for (uint32_t i = 0; i < d; ++i) cells_[cell[i]] = std::max(cells_[cell[i]], next);
  total_ = total_ > UINT64_MAX - count ? UINT64_MAX : total_ + count;
  return next;
}

bool AdmissionSketch::Restore(std::span<const uint32_t> cells, uint64_t total) {
  if (cells.size() != cells_.size()) return false;
  std::copy(cells.begin(), cells.end(), cells_.begin());
  total_ = total;
  return true;
}

}  // namespace din
