// Index growth finishes its drain in idle time: a shard whose index grew and that gets
// no further inserts frees its old index, in the store (DrainStep) and in a running
// server between requests.
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ps/shard_store.h"
#include "tests/testing/config.h"
#include "tests/testing/local_cluster.h"

namespace din {
namespace {

// The smallest number of inserts >= `from` after which a store of this shape is still
// draining (migrating() depends only on how many rows were inserted).
uint64_t InsertsLeavingADrain(uint64_t from) {
  ShardStore ref(4, 0);
  bool inserted;
  for (uint64_t k = 1;; ++k) {
    EXPECT_TRUE(ref.FindOrInsert(k * 7919, &inserted).ok());
    if (k >= from && ref.migrating()) return k;
  }
}

TEST(IdleDrainTest, DrainStepFreesTheOldIndexWithoutInserts) {
  const uint64_t n = InsertsLeavingADrain(5000);
  ShardStore store(4, 0);
  bool inserted;
  for (uint64_t k = 1; k <= n; ++k) ASSERT_TRUE(store.FindOrInsert(k * 7919, &inserted).ok());
  ASSERT_TRUE(store.migrating());
  const uint64_t before = store.MemoryBytes();
  int steps = 0;
  while (steps < 1'000'000 && store.DrainStep(64)) ++steps;
  EXPECT_GT(steps, 0);
  EXPECT_FALSE(store.migrating());
  EXPECT_LT(store.MemoryBytes(), before);  // the old index is gone
  for (uint64_t k = 1; k <= n; ++k) ASSERT_NE(store.Find(k * 7919), ShardStore::kNoRow);
}

TEST(IdleDrainTest, AServerDrainsBetweenRequests) {
  config::TrainConfig cfg = test::MustParse(R"pb(
    tables {
      name: "t"
      dim: 4
      shards: 1
      optimizer { sgd {} }
    }
  )pb");
  // Enough pulls that the last one leaves the index draining if only inserts drained it.
  const uint64_t n = InsertsLeavingADrain(20000);
  test::LocalCluster cluster(cfg, 1, 1);
  {
    auto client = cluster.Connect();
    std::vector<uint64_t> ids;
    for (uint64_t k = 1; k <= n; ++k) ids.push_back(k * 7919);
    for (size_t i = 0; i < ids.size(); i += 1000) {
      const std::vector<uint64_t> part(ids.begin() + i,
                                       ids.begin() + std::min(ids.size(), i + 1000));
      test::PullOne(*client, 0, part);
    }
    EXPECT_EQ(test::TotalRows(*client), n);
  }
  // No requests: the lane has the time to finish the drain.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  cluster.server(0).Stop();
  const ShardStore* store = cluster.server(0).handler(0)->store(0, 0);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->size(), n);
  EXPECT_FALSE(store->migrating()) << "the old index is still held";
  EXPECT_FALSE(cluster.server(0).handler(0)->HasIdleWork());
}

}  // namespace
}  // namespace din
