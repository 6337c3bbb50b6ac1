// Fixed 64-bit hashing. Dumps, checkpoints and the shard of every ID depend on these
// functions: they must never change.
#pragma once

#include <cstdint>
#include <string_view>

namespace din {

// Mix64: the SplitMix64 finalizer (Steele, Lea, Flood 2014; constants from Stafford's
// "Mix13"). A bijection on uint64 with full avalanche:
//   z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
//   z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//   return z ^ (z >> 31)
constexpr uint64_t Mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// shard(id) = Mix64(id) mod shards (docs/design.md §3).
constexpr uint32_t ShardOf(uint64_t id, uint32_t shards) {
  return static_cast<uint32_t>(Mix64(id) % shards);
}

// Hash of an arbitrary token (a non-numeric ID column with `hash: true`):
// 64-bit FNV-1a over the bytes, then Mix64 to spread the low bits.
constexpr uint64_t HashToken(std::string_view token) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : token) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// A counter-based random stream: the k-th uniform value of stream `key`, in [0, 1).
// Used where a value must depend only on its coordinates (row initializers).
inline double UniformAt(uint64_t key, uint64_t k) {
  const uint64_t bits = Mix64(key + 0x9e3779b97f4a7c15ULL * (k + 1));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace din
