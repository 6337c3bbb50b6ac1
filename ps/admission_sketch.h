// AdmissionSketch: a count-min sketch with conservative update, counting the sightings
// of IDs that have no row yet for online admission (docs/design.md §5, feature admission).
//
// `depth` rows of `width` saturating uint32 counters. Row i maps a key to counter
// fastrange(Mix64(key ^ seed_i), width). Add(key, c) reads the key's `depth` counters,
// takes their minimum m (the estimate) and raises each of them to at least m + c
// (conservative update: a counter only grows as far as this key needs, which is what
// keeps the overcount of colliding keys small). The estimate never undercounts: after
// any sequence of Adds, Estimate(key) >= the sum of key's own counts (each of its
// counters was raised to at least that). With width = ceil(e / ε) and depth =
// ceil(ln(1 / δ)), Estimate(key) <= true count + ε·N with probability >= 1 − δ, N the
// total of all counts added (Cormode and Muthukrishnan 2005); conservative update only
// lowers the estimates. So a sketch admits an ID early at worst, never late.
//
// Memory is fixed at construction (width · depth · 4 bytes) and never grows.
// Thread safety: none (one server lane owns it).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace din {

class AdmissionSketch {
 public:
  static constexpr uint32_t kMaxDepth = 16;
  // `bytes` of counters (at least one counter per row) in `depth` rows (clamped to
  // 1..kMaxDepth); `seed` chooses the row hashes.
  AdmissionSketch(uint64_t bytes, uint32_t depth, uint64_t seed);

  // Adds `count` sightings of `key` (conservative update) and returns the new estimate
  // (saturating at UINT32_MAX).
  uint32_t Add(uint64_t key, uint32_t count);
  uint32_t Estimate(uint64_t key) const;

  // The flat counter index of `key` in row i (row-major: i * width + column).
  uint64_t Cell(uint64_t key, uint32_t i) const;
  uint32_t counter(uint64_t cell) const { return cells_[cell]; }

  uint32_t depth() const { return depth_; }
  uint64_t width() const { return width_; }
  // The total of all counts added (N of the error bound), saturating.
  uint64_t total() const { return total_; }
  uint64_t MemoryBytes() const { return cells_.size() * sizeof(uint32_t); }

  // The counters (for checkpoints) and their restoration: Restore fails (returns false,
  // changes nothing) unless `cells` has width · depth counters.
  std::span<const uint32_t> cells() const { return cells_; }
  bool Restore(std::span<const uint32_t> cells, uint64_t total);

 private:
  uint32_t depth_;
  uint64_t width_;
  std::vector<uint64_t> seeds_;  // [depth]
  std::vector<uint32_t> cells_;  // [depth][width]
  uint64_t total_ = 0;
};

}  // namespace din
