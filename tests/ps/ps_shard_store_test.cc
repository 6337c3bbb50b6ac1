#include "ps/shard_store.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

// A value derived from the key, to check that rows keep their contents across growth.
float ValueOf(uint64_t key, uint32_t j) {
  return static_cast<float>((key * 2654435761u + j) % 100003);
}

TEST(ShardStoreTest, InsertFindAndGrowWithMillionsOfIds) {
  constexpr uint32_t kDim = 4;
  ShardStore store(kDim, /*state_floats=*/2);
  std::mt19937_64 rng(42);
  std::vector<uint64_t> keys(3'000'000);
  for (auto& k : keys) k = rng();
  std::unordered_set<uint64_t> distinct(keys.begin(), keys.end());

  uint64_t inserted_total = 0;
  for (uint64_t key : keys) {
    bool inserted = false;
    auto row = store.FindOrInsert(key, &inserted);
    ASSERT_TRUE(row.ok());
    if (inserted) {
      ++inserted_total;
      for (uint32_t j = 0; j < kDim; ++j) store.Weights(*row)[j] = ValueOf(key, j);
      store.State(*row)[0] = -1.0f;
      store.State(*row)[1] = static_cast<float>(key % 7);
    }
  }
  EXPECT_EQ(inserted_total, distinct.size());
  EXPECT_EQ(store.size(), distinct.size());
  // The index grew many times from its initial 16 slots; every row kept its contents.
  EXPECT_GT(store.slot_capacity(), distinct.size());
  for (uint64_t key : keys) {
    const uint32_t row = store.Find(key);
    ASSERT_NE(row, ShardStore::kNoRow);
    ASSERT_EQ(store.Key(row), key);
    for (uint32_t j = 0; j < kDim; ++j) ASSERT_EQ(store.Weights(row)[j], ValueOf(key, j));
    ASSERT_EQ(store.State(row)[1], static_cast<float>(key % 7));
    bool inserted = true;
    ASSERT_EQ(*store.FindOrInsert(key, &inserted), row);
    ASSERT_FALSE(inserted);
  }
  // Keys never inserted are not found.
  std::mt19937_64 other(7);
  for (int i = 0; i < 100000; ++i) {
    const uint64_t k = other();
    if (!distinct.count(k)) {
      ASSERT_EQ(store.Find(k), ShardStore::kNoRow);
    }
  }
}

TEST(ShardStoreTest, AdjacentAndAdversarialKeys) {
  // Sequential IDs and IDs equal modulo large powers of two must not collide.
  ShardStore store(1, 0);
  for (uint64_t i = 0; i < 200000; ++i) {
    for (uint64_t key : {i, i << 32, ~i}) {
      bool inserted;
      auto row = store.FindOrInsert(key, &inserted);
      ASSERT_TRUE(row.ok());
      if (inserted) store.Weights(*row)[0] = static_cast<float>(i);
    }
  }
  EXPECT_EQ(store.size(), 3 * 200000 - 1);  // key 0 == 0 << 32
  for (uint64_t i = 1; i < 200000; i += 997) {
    EXPECT_EQ(store.Weights(store.Find(i << 32))[0], static_cast<float>(i));
    EXPECT_EQ(store.Weights(store.Find(~i))[0], static_cast<float>(i));
  }
}

TEST(ShardStoreTest, EveryKeyStaysFindableWhileTheIndexDrains) {
  // Check after every insert, through several growths: the newest key, a spread of older
  // keys (some drained to the new index, some still in the old one) and FindWindow.
  ShardStore store(2, 0);
  std::vector<uint64_t> keys;
  std::mt19937_64 rng(5);
  int growths_seen_migrating = 0;
  for (int i = 0; i < 60000; ++i) {
    const uint64_t key = rng();
    bool inserted;
    auto row = store.FindOrInsert(key, &inserted);
    ASSERT_TRUE(row.ok());
    ASSERT_TRUE(inserted);
    store.Weights(*row)[0] = static_cast<float>(i);
    keys.push_back(key);
    if (store.migrating()) ++growths_seen_migrating;
    for (int probe = 0; probe < 8; ++probe) {
      const size_t j = (static_cast<size_t>(i) * 7919 + probe * 104729) % keys.size();
      const uint32_t r = store.Find(keys[j]);
      ASSERT_NE(r, ShardStore::kNoRow) << "key " << j << " lost after insert " << i;
      ASSERT_EQ(store.Weights(r)[0], static_cast<float>(j));
    }
    if (i % 97 == 0) {
      uint32_t rows[ShardStore::kWindow];
      const size_t start =
          keys.size() > ShardStore::kWindow ? keys.size() - ShardStore::kWindow : 0;
      const size_t n = keys.size() - start;
      store.FindWindow(keys.data() + start, n, rows);
      for (size_t k = 0; k < n; ++k) ASSERT_EQ(store.Weights(rows[k])[0], float(start + k));
    }
  }
  EXPECT_GT(growths_seen_migrating, 0);
  for (size_t j = 0; j < keys.size(); ++j)
    ASSERT_EQ(store.Weights(store.Find(keys[j]))[0], float(j));
}

TEST(ShardStoreTest, CountsSaturate) {
  ShardStore store(2, 0);
  bool inserted;
  const uint32_t row = *store.FindOrInsert(5, &inserted);
  EXPECT_EQ(store.Count(row), 0u);
  store.AddCount(row, 3);
  store.AddCount(row, 4);
  EXPECT_EQ(store.Count(row), 7u);
  store.AddCount(row, UINT32_MAX - 2);
  EXPECT_EQ(store.Count(row), UINT32_MAX);
  store.AddCount(row, 1);
  EXPECT_EQ(store.Count(row), UINT32_MAX);
}

TEST(ShardStoreTest, OverheadPerRowIsBounded) {
  // dim 16 with Adagrad state: payload = 16 + 16 floats + count = 132 bytes.
  ShardStore store(16, 16);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1'000'000; ++i) {
    bool inserted;
    ASSERT_TRUE(store.FindOrInsert(rng(), &inserted).ok());
  }
  EXPECT_EQ(store.payload_bytes(), 132u);
  const double per_row = static_cast<double>(store.MemoryBytes()) / store.size();
  EXPECT_LE(per_row - store.payload_bytes(), 16.0) << "bytes per row " << per_row;
  uint64_t visited = 0;
  store.ForEachRow([&](uint64_t, uint32_t count, const float*, const float*) {
    EXPECT_EQ(count, 0u);
    ++visited;
  });
  EXPECT_EQ(visited, store.size());
}

TEST(ShardStoreTest, CompactRowLayouts) {
  // dim 16 with row-wise Adagrad (one state float): key 8 + count 4 + weights + state 4.
  ShardStore fp32(16, 1, 0, 0, WeightFormat::kFp32);
  ShardStore fp16(16, 1, 0, 0, WeightFormat::kFp16);
  ShardStore bf16(16, 1, 0, 0, WeightFormat::kBf16);
  EXPECT_EQ(fp32.row_bytes(), 80u);
  EXPECT_EQ(fp16.row_bytes(), 48u);
  EXPECT_EQ(bf16.row_bytes(), 48u);
  // An odd dim pads the 16-bit weights to 4 bytes, so the state stays aligned.
  ShardStore odd(3, 2, 0, 0, WeightFormat::kFp16);
  EXPECT_EQ(odd.row_bytes(), 12u + 8u + 8u);
  for (ShardStore* store : {&fp32, &fp16, &bf16, &odd}) {
    const uint32_t dim = store->dim();
    for (uint64_t key = 1; key <= 3000; ++key) {
      bool inserted = false;
      auto row = store->FindOrInsert(key, &inserted);
      ASSERT_TRUE(row.ok());
      std::vector<float> w(dim);
      for (uint32_t j = 0; j < dim; ++j) w[j] = ValueOf(key, j) * 1e-3f;
      store->SetWeights(*row, w.data());
      for (uint32_t s = 0; s < store->state_floats(); ++s)
        store->State(*row)[s] = static_cast<float>(key) + s;
      store->SetCount(*row, static_cast<uint32_t>(key));
    }
    for (uint64_t key = 1; key <= 3000; ++key) {
      const uint32_t row = store->Find(key);
      ASSERT_NE(row, ShardStore::kNoRow);
      std::vector<float> got(dim);
      store->GetWeights(row, got.data());
      for (uint32_t j = 0; j < dim; ++j) {
        const float want = ValueOf(key, j) * 1e-3f;
        if (store->format() == WeightFormat::kFp32) {
          ASSERT_EQ(got[j], want);
        } else {
          // Nearest: the stored value is the 16-bit rounding of the written one.
          ASSERT_EQ(got[j], HalfToFloat(FloatToHalf(want, store->format()), store->format()));
        }
      }
      // Writing the weights never touches the neighbouring fields.
      for (uint32_t s = 0; s < store->state_floats(); ++s)
        ASSERT_EQ(store->State(row)[s], static_cast<float>(key) + s);
      ASSERT_EQ(store->Count(row), key);
      ASSERT_EQ(store->Key(row), key);
    }
  }
}

TEST(ShardStoreTest, RoundedWritesAreAPureFunctionOfTheSeed) {
  ShardStore a(16, 1, 0, 0, WeightFormat::kFp16);
  ShardStore b(16, 1, 0, 0, WeightFormat::kFp16);
  bool inserted;
  const uint32_t ra = *a.FindOrInsert(7, &inserted);
  const uint32_t rb = *b.FindOrInsert(7, &inserted);
  std::vector<float> w(16);
  for (uint32_t j = 0; j < 16; ++j) w[j] = 0.1f + 1e-5f * static_cast<float>(j);
  a.SetWeightsRounded(ra, w.data(), 42);
  b.SetWeightsRounded(rb, w.data(), 42);
  EXPECT_EQ(0, std::memcmp(a.WeightData(ra), b.WeightData(rb), 32));
  // Another seed draws differently for some coordinate.
  bool differs = false;
  for (uint64_t seed = 43; seed < 60 && !differs; ++seed) {
    b.SetWeightsRounded(rb, w.data(), seed);
    differs = std::memcmp(a.WeightData(ra), b.WeightData(rb), 32) != 0;
  }
  EXPECT_TRUE(differs);
}

// Fills `store` with distinct keys 1, 2, ... until an insert fails; returns the keys
// that got a row.
std::vector<uint64_t> FillUntilFull(ShardStore* store, uint64_t attempts) {
  std::vector<uint64_t> stored;
  for (uint64_t key = 1; key <= attempts; ++key) {
    bool inserted = false;
    auto row = store->FindOrInsert(key, &inserted);
    if (!row.ok()) {
      EXPECT_EQ(row.status().code(), StatusCode::kResourceExhausted);
      EXPECT_NE(row.status().message().find("cap of " + std::to_string(store->max_rows())),
                std::string::npos)
          << row.status().ToString();
      continue;
    }
    EXPECT_TRUE(inserted);
    store->Weights(*row)[0] = static_cast<float>(key);
    stored.push_back(key);
  }
  return stored;
}

TEST(ShardStoreTest, CapHoldsExactlyMaxRows) {
  for (uint64_t cap : {1u, 5u, 1023u, 1024u, 1025u, 3000u}) {
    SCOPED_TRACE("cap " + std::to_string(cap));
    ShardStore store(4, 2, /*expected_rows=*/0, /*max_rows=*/cap);
    EXPECT_EQ(store.max_rows(), cap);
    const std::vector<uint64_t> stored = FillUntilFull(&store, cap + 500);
    ASSERT_EQ(stored.size(), cap);
    EXPECT_EQ(store.size(), cap);
    EXPECT_TRUE(store.full());
    // Nothing was mapped beyond what `cap` rows need: the arena ends at row `cap`, the
    // index holds `cap` rows below the load factor (cap + cap/4 + 2 slots at most).
    store.CompleteGrowth();
    EXPECT_EQ(store.arena_rows(), cap);
    EXPECT_LE(store.slot_capacity(), cap + cap / 4 + 2);
    EXPECT_GT(0.8 * static_cast<double>(store.slot_capacity()), static_cast<double>(cap));
    // Existing rows are still found, unchanged, and FindOrInsert of them still works.
    for (uint64_t key : stored) {
      bool inserted = true;
      auto row = store.FindOrInsert(key, &inserted);
      ASSERT_TRUE(row.ok());
      EXPECT_FALSE(inserted);
      EXPECT_EQ(store.Weights(*row)[0], static_cast<float>(key));
    }
    EXPECT_EQ(store.Find(cap + 1), ShardStore::kNoRow);
  }
}

TEST(ShardStoreTest, CapBoundsTheInitialIndex) {
  // A capacity hint beyond the cap sizes the index for the cap only.
  ShardStore store(4, 2, /*expected_rows=*/10'000'000, /*max_rows=*/1000);
  EXPECT_LE(store.slot_capacity(), 1000u + 250u + 2u);
  EXPECT_EQ(store.arena_rows(), 0u);
  EXPECT_EQ(FillUntilFull(&store, 2000).size(), 1000u);
  EXPECT_EQ(store.arena_rows(), 1000u);
  // Without a cap the hint is honoured and the limit is kMaxRows.
  ShardStore uncapped(4, 2, /*expected_rows=*/100'000);
  EXPECT_GE(uncapped.slot_capacity(), 125'000u);
  EXPECT_EQ(uncapped.max_rows(), ShardStore::kMaxRows);
  EXPECT_FALSE(uncapped.full());
}

}  // namespace
}  // namespace din

namespace din {
namespace {

// Eviction: random inserts and erases against a map; every live key stays findable
// (backward-shift deletion keeps probe runs intact, also when they wrap), erased keys
// are gone, freed rows are reused before the arena grows, and rows never move.
// Incremental dumps: erased keys are recorded, in erase order, only while tracking is
// on; a key erased, created again and erased again is listed twice; clearing frees them.
TEST(ShardStoreEraseTest, TracksErasedKeysWhileOn) {
  ShardStore store(2, 0);
  auto insert = [&](uint64_t key) {
    bool inserted = false;
    Result<uint32_t> row = store.FindOrInsert(key, &inserted);
    EXPECT_TRUE(row.ok() && inserted);
    return *row;
  };
  for (uint64_t k = 1; k <= 10; ++k) insert(k * 1000);
  store.Erase(store.Find(1000));  // before tracking: not recorded
  EXPECT_TRUE(store.erased_keys().empty());
  store.TrackErased(true);
  const uint64_t before = store.MemoryBytes();
  store.Erase(store.Find(5000));
  store.Erase(store.Find(2000));
  const uint32_t again = insert(5000);  // takes a freed row number
  EXPECT_EQ(store.Find(5000), again);
  store.Erase(again);
  EXPECT_EQ(store.erased_keys(), (std::vector<uint64_t>{5000, 2000, 5000}));
  EXPECT_GT(store.MemoryBytes(), before);  // the list counts in the shard's memory
  store.ClearErased();
  EXPECT_TRUE(store.erased_keys().empty());
  store.Erase(store.Find(3000));
  EXPECT_EQ(store.erased_keys(), (std::vector<uint64_t>{3000}));
  store.TrackErased(false);  // off: the list is dropped and nothing more is recorded
  store.Erase(store.Find(4000));
  EXPECT_TRUE(store.erased_keys().empty());
}

TEST(ShardStoreEraseTest, RandomInsertsAndErasesMatchAMap) {
  for (uint64_t cap : {uint64_t{0}, uint64_t{700}}) {
    ShardStore store(2, 0, 16, cap);
    std::map<uint64_t, uint32_t> rows;  // key -> row
    std::mt19937_64 rng(5);
    uint64_t peak = 0;
    for (int op = 0; op < 60000; ++op) {
      const uint64_t key = rng() % 1500;  // few keys: long probe runs, many reuses
      auto it = rows.find(key);
      if (rng() % 3 == 0 && it != rows.end()) {
        store.Erase(it->second);
        ASSERT_FALSE(store.live(it->second));
        rows.erase(it);
      } else if (it == rows.end() && !store.full()) {
        bool inserted = false;
        Result<uint32_t> row = store.FindOrInsert(key, &inserted);
        ASSERT_TRUE(row.ok() && inserted);
        const float w[2] = {static_cast<float>(key), 1.0f};
        store.SetWeights(*row, w);
        rows[key] = *row;
      }
      peak = std::max<uint64_t>(peak, rows.size());
      ASSERT_EQ(store.size(), rows.size());
      if (op % 997 == 0) {
        for (uint64_t k = 0; k < 1500; ++k) {
          auto r = rows.find(k);
          ASSERT_EQ(store.Find(k), r == rows.end() ? ShardStore::kNoRow : r->second) << k;
        }
      }
    }
    // Freed memory is reused: the arena never held more rows than were live at once.
    EXPECT_EQ(store.end_row(), peak);
    uint64_t visited = 0;
    store.ForEachRow([&](uint64_t key, uint32_t, const float* w, const float*) {
      ++visited;
      EXPECT_TRUE(rows.count(key));
      EXPECT_EQ(w[0], static_cast<float>(key));
    });
    EXPECT_EQ(visited, rows.size());
  }
}

}  // namespace
}  // namespace din
