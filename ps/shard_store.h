// ShardStore: the rows of one shard of one embedding table.
//
// Layout. Rows live in an arena of geometrically growing chunks (chunk c holds
// 2^(kBaseBits + c) rows), so a row never moves once created and growing the arena never
// copies rows. A row is
//     [key: uint64][count n_j: uint32][weights: dim values][optimizer state floats]
// packed with 4-byte alignment (the key is read with memcpy). The weights are float32,
// or 16-bit (fp16 or bf16, common/half.h, padded to 4 bytes) for a table with half
// storage; the optimizer state is always float32. At dim 16 with row-wise Adagrad a row
// is 8 + 4 + 32 + 4 = 48 bytes in half precision, 80 in float32. Weights(row) gives the
// float32 weights in place and is only for float32 storage; GetWeights/SetWeights convert
// for every format, SetWeightsRounded rounds stochastically. The index is an
// open-addressing table of 4-byte slots with linear probing: a slot holds a 4-bit
// tag of the key's hash and the row number + 1 (0 = empty), so a probe compares keys
// in the arena only when the tags agree (1 in 16 for a foreign key).
//
// Growth is incremental: at a load factor of 0.8 a table 1.5x larger becomes the index
// and the old one is drained into it kMigratePerInsert slots per later insert, so no
// single call pays for re-indexing the whole shard. The owner also drains it in idle
// time (DrainStep: a server lane between requests), so the old index is freed without
// further inserts. While draining, lookups try the new
// index and then the old; a key is in exactly one of them. Overhead beyond the payload
// is the 8-byte key plus 4/load-factor bytes of index, i.e. 13 to 15.5 bytes per row
// (plus the old index, 4/0.8 bytes per row, while a drain is in progress).
//
// Cap. A store built with max_rows > 0 never holds more rows, and never maps more than
// they need: the index stops growing at the size max_rows fits in below the load factor,
// and the last arena chunk is cut to end at row max_rows. Without a cap the only limit
// is kMaxRows, and the cost of the cap on the insert path is the one compare that the
// kMaxRows check already was.
//
// Thread safety: none, and no lock is needed: a shard belongs to one server lane, and only
// that lane's thread calls it (ps/server.h).
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include <glog/logging.h>

#include "common/half.h"
#include "common/status.h"
#include "ps/huge_buffer.h"

namespace din {

class ShardStore {
 public:
  static constexpr uint32_t kNoRow = UINT32_MAX;
  // Row numbers use 28 bits of a slot.
  static constexpr uint32_t kMaxRows = (1u << 28) - 1;

  // `state_floats` floats of optimizer state follow the `dim` weights of each row, stored
  // as `format`. The index is sized for `expected_rows` up front; `max_rows` caps the rows
  // (0 = kMaxRows, also the most a larger value gives).
  ShardStore(uint32_t dim, uint32_t state_floats, uint64_t expected_rows = 0, uint64_t max_rows = 0,
             WeightFormat format = WeightFormat::kFp32);
  ShardStore(const ShardStore&) = delete;
  ShardStore& operator=(const ShardStore&) = delete;

  // The row of `key`, or kNoRow.
  uint32_t Find(uint64_t key) const;
  // Find() for up to kWindow keys at once: rows[i] = row of keys[i] or kNoRow. The memory
  // accesses of the keys overlap (slots and candidate rows are prefetched in passes), so a
  // window costs about one memory latency instead of two per key.
  static constexpr size_t kWindow = 16;
  void FindWindow(const uint64_t* keys, size_t n, uint32_t* rows) const;
  // Looks `keys` up one window of kWindow at a time (FindWindow) and calls fn(i, row) for
  // each key in order, with row = the row of keys[i] or kNoRow. A window is looked up
  // before fn sees any of its keys: a row fn creates for a key reads as kNoRow again for
  // a repeat of that key in the same window (FindOrInsert then finds it). fn returns void,
  // or bool where false stops the walk (FindEach then returns false).
  template <typename Fn>
  bool FindEach(std::span<const uint64_t> keys, Fn&& fn) const;
  // Brings row `row` towards the cache ahead of use.
  void PrefetchRow(uint32_t row) const { __builtin_prefetch(RowPtr(row)); }
  // The row of `key`, created (uninitialised: the caller fills it) when absent, with
  // *inserted telling which. Fails with ResourceExhausted when the key is absent and the
  // shard is full() (nothing changes then).
  Result<uint32_t> FindOrInsert(uint64_t key, bool* inserted);
  // True when no further row can be created (size() has reached max_rows()).
  bool full() const { return size() >= max_rows_; }
  // Eviction: removes row `row` (its key leaves the index by backward-shift deletion, so
  // no tombstones slow later probes). No other row moves; the row number goes to a free
  // list that the next FindOrInsert reuses, so its arena memory is reused. A drain of the
  // index in progress is finished first. Row numbers of a FindEach window held across an
  // Erase are stale: erase only between requests.
  void Erase(uint32_t row);
  // Incremental dumps (docs/design.md §12): while tracking is on, Erase appends the
  // erased row's key to erased_keys(), which the owner clears after each dump of the
  // series. Memory: 8 bytes per erase since the last clear, never more than 8 bytes per
  // row the shard held at that clear or created since (a row is erased at most once),
  // e.g. 8 MB for a million rows evicted between two dumps; nothing while off.
  void TrackErased(bool on) {
    track_erased_ = on;
    if (!on) ClearErased();
  }
  bool tracking_erased() const { return track_erased_; }
  const std::vector<uint64_t>& erased_keys() const { return erased_keys_; }
  void ClearErased() {
    erased_keys_.clear();
    erased_keys_.shrink_to_fit();
  }
  // False for a row number Erase freed (and not reused since).
  bool live(uint32_t row) const { return row < size_ && (row >= freed_.size() || !freed_[row]); }
  // Row numbers in use or freed lie below end_row(); size() counts the live ones.
  uint64_t end_row() const { return size_; }

  uint64_t Key(uint32_t row) const {
    uint64_t k;
    std::memcpy(&k, RowPtr(row), sizeof(k));
    return k;
  }
  uint32_t Count(uint32_t row) const {
    uint32_t c;
    std::memcpy(&c, RowPtr(row) + 8, sizeof(c));
    return c;
  }
  void SetCount(uint32_t row, uint32_t count) { std::memcpy(RowPtr(row) + 8, &count, 4); }
  // Adds `delta` to n_j, saturating at UINT32_MAX.
  void AddCount(uint32_t row, uint32_t delta) {
    const uint32_t c = Count(row);
    SetCount(row, c > UINT32_MAX - delta ? UINT32_MAX : c + delta);
  }
  // The float32 weights in place; float32 storage only.
  float* Weights(uint32_t row) {
    DCHECK(format_ == WeightFormat::kFp32);
    return reinterpret_cast<float*>(RowPtr(row) + kHeaderBytes);
  }
  const float* Weights(uint32_t row) const {
    DCHECK(format_ == WeightFormat::kFp32);
    return reinterpret_cast<const float*>(RowPtr(row) + kHeaderBytes);
  }
  // The stored weights as they are (dim * WeightBytes(format()) bytes).
  const std::byte* WeightData(uint32_t row) const { return RowPtr(row) + kHeaderBytes; }
  // The weights as float32 (exact for every format).
  void GetWeights(uint32_t row, float* out) const;
  // Stores `w`, rounded to nearest-even for a 16-bit format (exact when every value is
  // representable, as when they came from GetWeights).
  void SetWeights(uint32_t row, const float* w);
  // Stores `w`, rounded stochastically for a 16-bit format; the draw of coordinate j is
  // a pure function of (seed, j), so the same inputs store the same bits.
  void SetWeightsRounded(uint32_t row, const float* w, uint64_t seed);
  float* State(uint32_t row) {
    return reinterpret_cast<float*>(RowPtr(row) + kHeaderBytes + weight_area_);
  }
  const float* State(uint32_t row) const {
    return reinterpret_cast<const float*>(RowPtr(row) + kHeaderBytes + weight_area_);
  }

  uint32_t dim() const { return dim_; }
  uint32_t state_floats() const { return state_floats_; }
  WeightFormat format() const { return format_; }
  uint64_t size() const { return size_ - free_rows_.size(); }
  // The cap on size(): the constructor's max_rows, or kMaxRows when none was given.
  uint64_t max_rows() const { return max_rows_; }
  // Bytes of one row in the arena (key + count + weights + state).
  uint32_t row_bytes() const { return stride_; }
  // Payload bytes of one row: weights + optimizer state + count (what a row must hold).
  uint32_t payload_bytes() const { return weight_area_ + 4 * state_floats_ + 4; }
  // Memory the shard holds: index slots plus the arena rows in use (untouched arena
  // pages of the last chunk are not resident and not counted).
  uint64_t MemoryBytes() const;
  uint64_t slot_capacity() const { return capacity_; }
  // Rows the arena chunks mapped so far can hold (never more than max_rows()).
  uint64_t arena_rows() const { return arena_rows_; }
  // True while an old index is being drained into a larger one.
  bool migrating() const { return old_slots_ != nullptr; }
  // Finishes a drain in progress at once (frees the old index).
  void CompleteGrowth() {
    if (old_slots_ != nullptr) Migrate(old_capacity_);
  }
  // Moves up to `slots` slots of a drain in progress (freeing the old index once they
  // are all moved); returns whether the drain is still in progress.
  bool DrainStep(uint64_t slots) {
    if (old_slots_ != nullptr) Migrate(slots);
    return old_slots_ != nullptr;
  }

  // The seam for dump and checkpoint: visits every row in creation order.
  // fn(uint64_t key, uint32_t count, const float* weights, const float* state), with the
  // weights as float32 whatever the storage (a 16-bit value converts exactly).
  template <typename Fn>
  void ForEachRow(Fn&& fn) const {
    ForEachRowIndexed([&](uint32_t, uint64_t key, uint32_t count, const float* w,
                          const float* state) { fn(key, count, w, state); });
  }
  // The same, with each row's number first: fn(row, key, count, weights, state).
  template <typename Fn>
  void ForEachRowIndexed(Fn&& fn) const {
    if (format_ == WeightFormat::kFp32) {
      for (uint32_t r = 0; r < size_; ++r)
        if (live(r))
          fn(r, Key(r), Count(r), reinterpret_cast<const float*>(RowPtr(r) + kHeaderBytes),
             State(r));
      return;
    }
    std::vector<float> w(dim_);
    for (uint32_t r = 0; r < size_; ++r) {
      if (!live(r)) continue;
      GetWeights(r, w.data());
      fn(r, Key(r), Count(r), static_cast<const float*>(w.data()), State(r));
    }
  }

 private:
  static constexpr uint32_t kHeaderBytes = 12;  // key + count
  static constexpr uint32_t kBaseBits = 10;
  static constexpr uint32_t kTagShift = 28;
  static constexpr uint32_t kRowMask = (1u << kTagShift) - 1;
  static constexpr double kMaxLoad = 0.8;

  static uint64_t HashOf(uint64_t key);
  // The slot comes from the hash's top bits (fast range), so neighbouring slots share
  // them; the tag is taken from bits 32..35, which are independent of the slot.
  static uint32_t TagOf(uint64_t hash) { return static_cast<uint32_t>(hash >> 32) & 0xF; }
  size_t SlotOf(uint64_t hash) const {
    return static_cast<size_t>((static_cast<__uint128_t>(hash) * capacity_) >> 64);
  }
  std::byte* RowPtr(uint32_t row) const {
    const uint32_t chunk = std::bit_width((row >> kBaseBits) + 1) - 1;
    const uint32_t first = ((1u << chunk) - 1) << kBaseBits;
    return chunks_[chunk].data() + static_cast<size_t>(row - first) * stride_;
  }
  static constexpr uint64_t kMigratePerInsert = 8;
  // Index slots that hold `rows` rows strictly below the load factor:
  // 0.8 * (n + n/4 + 2) >= n + 1 for every n, in integers (no rounding at the boundary).
  static uint64_t SlotsFor(uint64_t rows) { return rows + rows / 4 + 2; }

  // The row of `key` in one index (the current or the draining one), or kNoRow.
  uint32_t Probe(const uint32_t* slots, uint64_t cap, uint64_t hash, uint64_t key) const;
  // Makes a 1.5x larger index current; the old one starts draining.
  void StartGrowth();
  // Moves up to `n` slots of the draining index into the current one.
  void Migrate(uint64_t n);
  void AddChunk();
  // Stores slot value `slot` (tag + row) at the first free position for `hash`.
  static void PlaceInto(uint32_t* slots, size_t capacity, uint64_t hash, uint32_t slot);

  const uint32_t dim_;
  const uint32_t state_floats_;
  const WeightFormat format_;
  const uint32_t weight_area_;  // bytes of the weights, padded to 4
  const uint32_t stride_;
  const uint64_t max_rows_;      // size_ never exceeds it
  const uint64_t max_capacity_;  // SlotsFor(max_rows_): the index never grows past it
  uint64_t size_ = 0;
  uint64_t arena_rows_ = 0;  // rows the allocated chunks can hold
  HugeBuffer slot_memory_;   // capacity_ slots of uint32, zero = empty
  uint32_t* slots_ = nullptr;
  uint64_t capacity_ = 0;
  HugeBuffer old_memory_;  // the index being drained (empty when none)
  const uint32_t* old_slots_ = nullptr;
  uint64_t old_capacity_ = 0;
  uint64_t migrate_pos_ = 0;  // old slots below this have been moved
  std::vector<HugeBuffer> chunks_;
  // Eviction: row numbers Erase freed (reused last-in first), and which rows are free
  // (empty until the first Erase).
  std::vector<uint32_t> free_rows_;
  std::vector<bool> freed_;
  // The keys Erase removed while tracking is on (TrackErased).
  bool track_erased_ = false;
  std::vector<uint64_t> erased_keys_;
};

template <typename Fn>
bool ShardStore::FindEach(std::span<const uint64_t> keys, Fn&& fn) const {
  uint32_t rows[kWindow];
  for (size_t base = 0; base < keys.size(); base += kWindow) {
    const size_t n = std::min(kWindow, keys.size() - base);
    FindWindow(keys.data() + base, n, rows);
    for (size_t i = 0; i < n; ++i) {
      if constexpr (std::is_void_v<std::invoke_result_t<Fn&, size_t, uint32_t>>) {
        fn(base + i, rows[i]);
      } else {
        if (!fn(base + i, rows[i])) return false;
      }
    }
  }
  return true;
}

}  // namespace din
