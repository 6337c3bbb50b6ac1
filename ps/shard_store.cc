#include "ps/shard_store.h"

#include <algorithm>

#include <glog/logging.h>

#include "common/config.h"
#include "common/hash.h"

namespace din {

static_assert(ShardStore::kMaxRows == kMaxRowsPerShard,
              "ValidateConfig bounds max_rows_per_shard by what a shard can hold");

ShardStore::ShardStore(uint32_t dim, uint32_t state_floats, uint64_t expected_rows,
                       uint64_t max_rows, WeightFormat format)
    : dim_(dim),
      state_floats_(state_floats),
      format_(format),
      weight_area_((WeightBytes(format) * dim + 3) / 4 * 4),
      stride_(kHeaderBytes + weight_area_ + 4 * state_floats),
      max_rows_(max_rows == 0 ? kMaxRows : std::min<uint64_t>(max_rows, kMaxRows)),
      max_capacity_(SlotsFor(max_rows_)) {
  const uint64_t want = std::max<uint64_t>(
      16,
      static_cast<uint64_t>(static_cast<double>(std::min(expected_rows, max_rows_)) / kMaxLoad) +
          1);
  capacity_ = std::min(want, max_capacity_);
  slot_memory_ = HugeBuffer(capacity_ * sizeof(uint32_t));
  slots_ = reinterpret_cast<uint32_t*>(slot_memory_.data());
}

void ShardStore::GetWeights(uint32_t row, float* out) const {
  const std::byte* p = WeightData(row);
  if (format_ == WeightFormat::kFp32) {
    std::memcpy(out, p, size_t{dim_} * sizeof(float));
    return;
  }
  for (uint32_t j = 0; j < dim_; ++j) {
    uint16_t h;
    std::memcpy(&h, p + 2 * j, sizeof(h));
    out[j] = HalfToFloat(h, format_);
  }
}

void ShardStore::SetWeights(uint32_t row, const float* w) {
  std::byte* p = RowPtr(row) + kHeaderBytes;
  if (format_ == WeightFormat::kFp32) {
    std::memcpy(p, w, size_t{dim_} * sizeof(float));
    return;
  }
  for (uint32_t j = 0; j < dim_; ++j) {
    const uint16_t h = FloatToHalf(w[j], format_);
    std::memcpy(p + 2 * j, &h, sizeof(h));
  }
}

void ShardStore::SetWeightsRounded(uint32_t row, const float* w, uint64_t seed) {
  std::byte* p = RowPtr(row) + kHeaderBytes;
  if (format_ == WeightFormat::kFp32) {
    std::memcpy(p, w, size_t{dim_} * sizeof(float));
    return;
  }
  for (uint32_t j = 0; j < dim_; ++j) {
    const uint16_t h = FloatToHalfStochastic(
        w[j], format_, Mix64(seed + (uint64_t{j} + 1) * 0x9e3779b97f4a7c15ULL));
    std::memcpy(p + 2 * j, &h, sizeof(h));
  }
}

uint64_t ShardStore::HashOf(uint64_t key) {
  // Mix64(key) also picks the shard (mod shards), which fixes its low bits within one
  // shard; multiplying by an odd constant spreads every bit into the high bits the slot
  // (fast range) and the tag are taken from.
  return Mix64(key) * 0x9e3779b97f4a7c15ULL;
}

uint32_t ShardStore::Probe(const uint32_t* slots, uint64_t cap, uint64_t hash, uint64_t key) const {
  const uint32_t tag = TagOf(hash);
  for (size_t i = static_cast<size_t>((static_cast<__uint128_t>(hash) * cap) >> 64);;
       i = (i + 1 == cap) ? 0 : i + 1) {
    const uint32_t s = slots[i];
    if (s == 0) return kNoRow;
    if ((s >> kTagShift) == tag) {
      const uint32_t row = (s & kRowMask) - 1;
      if (Key(row) == key) return row;
    }
  }
}

uint32_t ShardStore::Find(uint64_t key) const {
  const uint64_t h = HashOf(key);
  const uint32_t row = Probe(slots_, capacity_, h, key);
  if (row != kNoRow || old_slots_ == nullptr) return row;
  return Probe(old_slots_, old_capacity_, h, key);
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
  // Third pass: the exact probe, now mostly from cache; keys not yet drained from the
  // old index are looked up there.
  for (size_t i = 0; i < n; ++i) {
    rows[i] = Probe(slots_, capacity_, hash[i], keys[i]);
    if (rows[i] == kNoRow && old_slots_ != nullptr)
      rows[i] = Probe(old_slots_, old_capacity_, hash[i], keys[i]);
  }
}

Result<uint32_t> ShardStore::FindOrInsert(uint64_t key, bool* inserted) {
  const uint64_t h = HashOf(key);
  const uint32_t tag = TagOf(h);
  size_t i = SlotOf(h);
  for (;; i = (i + 1 == capacity_) ? 0 : i + 1) {
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
  if (old_slots_ != nullptr) {
    const uint32_t row = Probe(old_slots_, old_capacity_, h, key);
    if (row != kNoRow) {
      *inserted = false;
      return row;
    }
  }
  if (size() >= max_rows_) {
    if (max_rows_ < kMaxRows)
      return Status::ResourceExhausted("shard is full: it holds its cap of " +
                                       std::to_string(max_rows_) + " rows");
    return Status::ResourceExhausted("shard is full: " + std::to_string(kMaxRows) +
                                     " rows (use more shards for this table)");
  }
  uint32_t row;
  if (!free_rows_.empty()) {  // reuse an evicted row's memory
    row = free_rows_.back();
    free_rows_.pop_back();
    freed_[row] = false;
  } else {
    if (size_ == arena_rows_) AddChunk();
    row = static_cast<uint32_t>(size_++);
  }
  std::byte* p = RowPtr(row);
  std::memcpy(p, &key, sizeof(key));
  const uint32_t zero = 0;
  std::memcpy(p + 8, &zero, sizeof(zero));
  const uint32_t slot = (tag << kTagShift) | (row + 1);
  if (static_cast<double>(size_) > kMaxLoad * static_cast<double>(capacity_)) {
    StartGrowth();
    PlaceInto(slots_, capacity_, h, slot);
  } else {
    slots_[i] = slot;
  }
  if (old_slots_ != nullptr) Migrate(kMigratePerInsert);
  *inserted = true;
  return row;
}

void ShardStore::PlaceInto(uint32_t* slots, size_t cap, uint64_t hash, uint32_t slot) {
  size_t i = static_cast<size_t>((static_cast<__uint128_t>(hash) * cap) >> 64);
  while (slots[i] != 0) i = (i + 1 == cap) ? 0 : i + 1;
  slots[i] = slot;
}

void ShardStore::StartGrowth() {
  // A drain still in progress finishes first (it cannot, with kMigratePerInsert slots
  // per insert and 0.4x the old capacity of inserts before the next growth).
  if (old_slots_ != nullptr) Migrate(old_capacity_);
  old_memory_ = std::move(slot_memory_);
  old_slots_ = slots_;
  old_capacity_ = capacity_;
  migrate_pos_ = 0;
  // Growth only starts while size_ < 0.8 * max_capacity_, so the index still grows here.
  capacity_ = std::min(capacity_ + capacity_ / 2 + 1, max_capacity_);
  DCHECK_GT(capacity_, old_capacity_);
  slot_memory_ = HugeBuffer(capacity_ * sizeof(uint32_t));
  slots_ = reinterpret_cast<uint32_t*>(slot_memory_.data());
}

void ShardStore::Migrate(uint64_t n) {
  const uint64_t end = std::min(old_capacity_, migrate_pos_ + n);
  for (uint64_t p = migrate_pos_; p < end; ++p) {
    const uint32_t s = old_slots_[p];
    if (s != 0) PlaceInto(slots_, capacity_, HashOf(Key((s & kRowMask) - 1)), s);
  }
  migrate_pos_ = end;
  if (migrate_pos_ == old_capacity_) {
    old_memory_ = HugeBuffer();
    old_slots_ = nullptr;
    old_capacity_ = 0;
  }
}

void ShardStore::AddChunk() {
  // The last chunk a cap allows ends at row max_rows_ (RowPtr only needs the chunks'
  // first rows, which cutting the last one does not move).
  const uint64_t rows =
      std::min(uint64_t{1} << (kBaseBits + chunks_.size()), max_rows_ - arena_rows_);
  // Pages are committed by the kernel only when rows are written.
  chunks_.emplace_back(rows * stride_);
  arena_rows_ += rows;
}

void ShardStore::Erase(uint32_t row) {
  DCHECK(live(row));
  CompleteGrowth();
  const uint64_t key = Key(row);
  const uint64_t h = HashOf(key);
  const uint32_t tag = TagOf(h);
  size_t i = SlotOf(h);
  for (;; i = (i + 1 == capacity_) ? 0 : i + 1) {
    const uint32_t s = slots_[i];
    CHECK_NE(s, 0u) << "erasing a row whose key is not indexed";
    if ((s >> kTagShift) == tag && (s & kRowMask) - 1 == row) break;
  }
  // Backward-shift deletion: later entries of the probe run whose home slot is not in
  // (hole, j] move into the hole, so every key stays reachable from its home slot.
  size_t hole = i;
  for (size_t j = (hole + 1 == capacity_) ? 0 : hole + 1;; j = (j + 1 == capacity_) ? 0 : j + 1) {
    const uint32_t s = slots_[j];
    if (s == 0) break;
    const size_t home = SlotOf(HashOf(Key((s & kRowMask) - 1)));
    // Cyclic: does home lie in (hole, j]?
    const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!stays) {
      slots_[hole] = s;
      hole = j;
    }
  }
  slots_[hole] = 0;
  if (freed_.size() < size_) freed_.resize(size_, false);
  freed_[row] = true;
  free_rows_.push_back(row);
  if (track_erased_) erased_keys_.push_back(key);
}

uint64_t ShardStore::MemoryBytes() const {
  return (capacity_ + old_capacity_) * sizeof(uint32_t) + size_ * stride_ +
         free_rows_.capacity() * sizeof(uint32_t) + freed_.capacity() / 8 +
         erased_keys_.capacity() * sizeof(uint64_t) + chunks_.capacity() * sizeof(chunks_[0]);
}

}  // namespace din
