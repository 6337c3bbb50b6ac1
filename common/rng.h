// SplitMix64: the project's one seeded random stream (data generation, conversion
// splits, reader shuffling, model initialization). Fixed and portable: std:: engines and
// distributions differ between standard libraries, and every output here must be the
// same in every process and on every machine. Datasets, reader checkpoints and initial
// weights depend on these functions: they must never change.
#pragma once

#include <cstdint>
#include <utility>

#include "common/hash.h"

namespace din {

// SplitMix64 (Steele, Lea, Flood 2014): the state advances by the golden-ratio gamma and
// each output is Mix64(state). The state alone determines the rest of the stream.
class SplitMix64 {
 public:
  static constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ULL;

  constexpr explicit SplitMix64(uint64_t seed) : state_(seed) {}

  constexpr uint64_t Next() { return Mix64(state_ += kGamma); }
  // Uniform in [0, 1), 53 random bits.
  constexpr double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [-1, 1), 24 random bits: exactly representable in float.
  constexpr float Symmetric() { return static_cast<float>(Next() >> 40) * 0x1p-23f - 1.0f; }

  // For saving and restoring a stream (reader checkpoints).
  constexpr uint64_t state() const { return state_; }

 private:
  uint64_t state_;
};

// Fisher-Yates shuffle of [first, last): for i = n .. 2, swap element i-1 with element
// rng.Next() % i. (The slight modulo bias is part of the fixed output.)
template <typename RandomIt>
void Shuffle(RandomIt first, RandomIt last, SplitMix64& rng) {
  for (uint64_t i = static_cast<uint64_t>(last - first); i > 1; --i)
    std::swap(first[i - 1], first[rng.Next() % i]);
}

}  // namespace din
