#include "ps/shard_store.h"

#include <algorithm>

#include "common/hash.h"

namespace din {

ShardStore::ShardStore(uint32_t dim, uint32_t state_floats, uint64_t expected_rows)
    : dim_(dim), state_floats_(state_floats), stride_(kHeaderBytes + 4 * (dim + state_floats)) {
  const uint64_t want = std::max<uint64_t>(
      16, static_cast<uint64_t>(static_cast<double>(std::min<uint64_t>(expected_rows, kMaxRows)) /
                                kMaxLoad) +
              1);
  slot_memory_ = HugeBuffer(want * sizeof(uint32_t));
  slots_ = reinterpret_cast<uint32_t*>(slot_memory_.data());
  capacity_ = want;
}

uint64_t ShardStore::HashOf(uint64_t key) {
  // Mix64(key) also picks the shard (mod shards), which fixes its low bits within one
  // shard; multiplying by an odd constant spreads every bit into the high bits the slot
  // (fast range) and the tag are taken from.
  return Mix64(key) * 0x9e3779b97f4a7c15ULL;
}

uint32_t ShardStore::Find(uint64_t key) const {
  const uint64_t h = HashOf(key);
  const uint32_t tag = TagOf(h);
  const size_t cap = capacity_;
  for (size_t i = SlotOf(h);; i = (i + 1 == cap) ? 0 : i + 1) {
    const uint32_t s = slots_[i];
    if (s == 0) return kNoRow;
    if ((s >> kTagShift) == tag) {
      const uint32_t row = (s & kRowMask) - 1;
      if (Key(row) == key) return row;
    }
  }
}

void ShardStore::FindWindow(const uint64_t* keys, size_t n, uint32_t* rows) const {
  uint64_t hash[kWindow];
  size_t pos[kWindow];
  const size_t cap = capacity_;
  for (size_t i = 0; i < n; ++i) {
    hash[i] = HashOf(keys[i]);
    pos[i] = SlotOf(hash[i]);
    __builtin_prefetch(&slots_[pos[i]]);
  }
  // Second pass: the slots are arriving; prefetch each key's first candidate row.
  for (size_t i = 0; i < n; ++i) {
    const uint32_t tag = TagOf(hash[i]);
    for (size_t p = pos[i];; p = (p + 1 == cap) ? 0 : p + 1) {
      const uint32_t s = slots_[p];
      if (s == 0) break;
      if ((s >> kTagShift) == tag) {
        __builtin_prefetch(RowPtr((s & kRowMask) - 1));
        break;
      }
    }
  }
  // Third pass: the exact probe, now mostly from cache.
  for (size_t i = 0; i < n; ++i) {
    const uint32_t tag = TagOf(hash[i]);
    rows[i] = kNoRow;
    for (size_t p = pos[i];; p = (p + 1 == cap) ? 0 : p + 1) {
      const uint32_t s = slots_[p];
      if (s == 0) break;
      if ((s >> kTagShift) == tag && Key((s & kRowMask) - 1) == keys[i]) {
        rows[i] = (s & kRowMask) - 1;
        break;
      }
    }
  }
}

Result<uint32_t> ShardStore::FindOrInsert(uint64_t key, bool* inserted) {
  const uint64_t h = HashOf(key);
  const uint32_t tag = TagOf(h);
  size_t cap = capacity_;
  size_t i = SlotOf(h);
  for (;; i = (i + 1 == cap) ? 0 : i + 1) {
    const uint32_t s = slots_[i];
    if (s == 0) break;
    if ((s >> kTagShift) == tag) {
      const uint32_t row = (s & kRowMask) - 1;
      if (Key(row) == key) {
        *inserted = false;
        return row;
      }
    }
  }
  if (size_ >= kMaxRows) {
    return Status::ResourceExhausted("shard is full: " + std::to_string(kMaxRows) +
                                     " rows (use more shards for this table)");
  }
  if (static_cast<double>(size_ + 1) > kMaxLoad * static_cast<double>(cap)) {
    GrowIndex();
    cap = capacity_;
    for (i = SlotOf(h); slots_[i] != 0; i = (i + 1 == cap) ? 0 : i + 1) {
    }
  }
  if (size_ == arena_rows_) AddChunk();
  const uint32_t row = static_cast<uint32_t>(size_++);
  slots_[i] = (tag << kTagShift) | (row + 1);
  std::byte* p = RowPtr(row);
  std::memcpy(p, &key, sizeof(key));
  const uint32_t zero = 0;
  std::memcpy(p + 8, &zero, sizeof(zero));
  *inserted = true;
  return row;
}

void ShardStore::PlaceInto(uint32_t* slots, size_t cap, uint64_t hash, uint32_t row) {
  size_t i = static_cast<size_t>((static_cast<__uint128_t>(hash) * cap) >> 64);
  while (slots[i] != 0) i = (i + 1 == cap) ? 0 : i + 1;
  slots[i] = (TagOf(hash) << kTagShift) | (row + 1);
}

void ShardStore::GrowIndex() {
  const uint64_t bigger_cap = capacity_ + capacity_ / 2 + 1;
  HugeBuffer bigger_memory(bigger_cap * sizeof(uint32_t));
  uint32_t* bigger = reinterpret_cast<uint32_t*>(bigger_memory.data());
  // Arena order: sequential reads of the keys, random writes of 4-byte slots, whose
  // cache lines are prefetched a window ahead.
  const size_t cap = bigger_cap;
  uint64_t hash[kWindow];
  for (uint32_t base = 0; base < size_; base += kWindow) {
    const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kWindow, size_ - base));
    for (uint32_t i = 0; i < n; ++i) {
      hash[i] = HashOf(Key(base + i));
      __builtin_prefetch(&bigger[(static_cast<__uint128_t>(hash[i]) * cap) >> 64], 1);
    }
    for (uint32_t i = 0; i < n; ++i) PlaceInto(bigger, cap, hash[i], base + i);
  }
  slot_memory_ = std::move(bigger_memory);
  slots_ = bigger;
  capacity_ = bigger_cap;
}

void ShardStore::AddChunk() {
  const uint64_t rows = uint64_t{1} << (kBaseBits + chunks_.size());
  // Pages are committed by the kernel only when rows are written.
  chunks_.emplace_back(rows * stride_);
  arena_rows_ += rows;
}

uint64_t ShardStore::MemoryBytes() const {
  return capacity_ * sizeof(uint32_t) + size_ * stride_ + chunks_.capacity() * sizeof(chunks_[0]);
}

}  // namespace din
