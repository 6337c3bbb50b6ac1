// Eviction under a cap (when_full EVICT_LFU / EVICT_LRU, docs/design.md §5) through
// PsClient and real server lanes. Which IDs must survive is computed here from the
// stream the test sends (frequencies, last-push steps), not read back from the servers.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "common/dump_format.h"
#include "common/hash.h"
#include "tests/testing/config.h"
#include "tests/testing/files.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/temp_dir.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

// One shard per table, so the cap is the table's: above kEvictSample rows, so the
// eviction threshold comes from a random sample.
constexpr uint64_t kCap = 1024;
// Above LaneHandler::kEvictVisitsPerRequest: a pass spans several requests.
constexpr uint64_t kBigCap = 100000;

std::string ConfigText() {
  const std::string common =
      "max_rows_per_shard: " + std::to_string(kCap) +
      " initializer { kind: NORMAL stddev: 0.5 } optimizer { sgd { learning_rate: 1 } }";
  return test::Table("lfu", 2, 1, "when_full: EVICT_LFU " + common) +
         test::Table("lru", 2, 1, "when_full: EVICT_LRU " + common) +
         test::Table("big", 1, 1,
                     "when_full: EVICT_LRU max_rows_per_shard: " + std::to_string(kBigCap)) +
         "ps { request_timeout_ms: 10000 }\n";
}

class EvictTest : public ::testing::Test {
 protected:
  EvictTest()
      : cfg_(test::MustParse(ConfigText())), cluster_(cfg_, 1, 2), client_(cluster_.Connect()) {}

  // One training step of `table` as the trainer sends it with mba_mode ONLINE: the
  // batch's counts (one per ID), then a gradient for each ID.
  void Step(int table, const std::vector<uint64_t>& ids) {
    const std::vector<uint32_t> ones(ids.size(), 1);
    CountSpec cs{table, ids, ones};
    auto h = client_->PushCounts({&cs, 1});
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(client_->Wait(*h).ok());
    test::PushOne(*client_, table, ids, std::vector<float>(ids.size() * 2, 0.01f));
  }
  // Whether `id` has a row: an evaluation pull of an ID without one reads zeros (a row's
  // weights start from NORMAL(0, 0.5), never exactly zero together).
  bool Present(int table, uint64_t id) {
    const TablePull p = test::PullOne(*client_, table, {id}, wire::EVAL);
    return p.values[0] != 0.0f || p.values[1] != 0.0f;
  }
  // STATS of `table` summed over its shards: rows held, or rows evicted.
  uint64_t Stat(int table, bool evicted) {
    auto stats = client_->Stats();
    CHECK(stats.ok()) << stats.status().ToString();
    uint64_t n = 0;
    for (const auto& st : *stats)
      if (st.table() == static_cast<uint32_t>(table)) n += evicted ? st.evicted_rows() : st.rows();
    return n;
  }
  uint64_t Rows(int table) { return Stat(table, false); }
  uint64_t Evicted(int table) { return Stat(table, true); }

  config::TrainConfig cfg_;
  test::LocalCluster cluster_;
  std::unique_ptr<PsClient> client_;
};

uint64_t Id(uint64_t group, uint64_t i) { return Mix64(group * 1000003 + i) >> 8; }

// 30 steps of 300 hot IDs, 400 warm IDs each every 4th step and 30 new cold IDs, then a
// burst of 6 steps of the hot IDs and 150 new cold IDs: LFU keeps every ID seen in at
// least 5 steps (the ranking computed here), LRU loses warm IDs to the burst.
TEST_F(EvictTest, LfuUnderACapKeepsTheFrequentIds) {
  std::map<uint64_t, int> steps_seen;  // the independent ranking: steps containing each ID
  uint64_t cold = 0;
  auto run = [&](int table) {
    steps_seen.clear();
    cold = 0;
    for (int s = 0; s < 30; ++s) {
      std::vector<uint64_t> ids;
      for (uint64_t i = 0; i < 300; ++i) ids.push_back(Id(1, i));
      for (uint64_t i = 0; i < 400; ++i)
        if (i % 4 == static_cast<uint64_t>(s) % 4) ids.push_back(Id(2, i));
      for (int i = 0; i < 30; ++i) ids.push_back(Id(3, cold++));
      for (uint64_t id : ids) ++steps_seen[id];
      Step(table, ids);
    }
    for (int s = 0; s < 6; ++s) {
      std::vector<uint64_t> ids;
      for (uint64_t i = 0; i < 300; ++i) ids.push_back(Id(1, i));
      for (int i = 0; i < 150; ++i) ids.push_back(Id(3, cold++));
      for (uint64_t id : ids) ++steps_seen[id];
      Step(table, ids);
    }
  };
  run(0);
  EXPECT_LE(Rows(0), kCap);
  EXPECT_GT(Evicted(0), 0u);
  int frequent = 0, kept = 0;
  for (const auto& [id, n] : steps_seen) {
    if (n < 5) continue;
    ++frequent;
    if (Present(0, id)) ++kept;
  }
  EXPECT_EQ(frequent, 700);
  EXPECT_EQ(kept, frequent) << "LFU evicted IDs that are among the most frequent";

  // The same stream under LRU: the burst evicts the least recently pushed rows, warm
  // IDs among them; the hot IDs (pushed in every step) stay.
  run(1);
  int warm_kept = 0;
  for (uint64_t i = 0; i < 400; ++i) warm_kept += Present(1, Id(2, i));
  EXPECT_LT(warm_kept, 400);
  for (uint64_t i = 0; i < 300; ++i) EXPECT_TRUE(Present(1, Id(1, i))) << i;
}

// Step s pushes 100 hot IDs and a block of 100 new IDs. The cap holds about nine blocks:
// LRU keeps the hot IDs and the last five blocks whole, and no block ten or more steps old.
TEST_F(EvictTest, LruKeepsTheRecentlyPushedRows) {
  constexpr int kSteps = 30;
  std::vector<uint64_t> hot;
  for (uint64_t i = 0; i < 100; ++i) hot.push_back(Id(4, i));
  for (int s = 0; s < kSteps; ++s) {
    std::vector<uint64_t> ids = hot;
    for (uint64_t i = 0; i < 100; ++i) ids.push_back(Id(5 + s, i));
    Step(1, ids);
  }
  EXPECT_LE(Rows(1), kCap);
  for (uint64_t id : hot) EXPECT_TRUE(Present(1, id));
  for (int s = 0; s < kSteps; ++s) {
    const int age = kSteps - 1 - s;
    int present = 0;
    for (uint64_t i = 0; i < 100; ++i) present += Present(1, Id(5 + s, i));
    if (age <= 5) {
      EXPECT_EQ(present, 100) << "block of age " << age;
    }
    if (age >= 10) {
      EXPECT_EQ(present, 0) << "block of age " << age;
    }
  }
}

// A shard larger than one request's share of a pass: 150 pushes of 1000 new IDs each
// into a cap of 100000. The passes run across requests and keep up: no key is refused a
// row, the IDs of the last 40 pushes are all there, those of the first 40 all gone.
TEST_F(EvictTest, PassesSpanningRequestsKeepUpWithNewRows) {
  std::vector<std::vector<uint64_t>> pushes;
  for (int r = 0; r < 150; ++r) {
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < 1000; ++i) ids.push_back(Id(1000 + r, i));
    test::PushOne(*client_, 2, ids, std::vector<float>(ids.size(), 0.01f));
    pushes.push_back(std::move(ids));
  }
  auto stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  for (const auto& st : *stats) {
    if (st.table() != 2) continue;
    EXPECT_EQ(st.skipped_keys(), 0u);
    EXPECT_LE(st.rows(), kBigCap);
    EXPECT_GE(st.rows(), kBigCap - kBigCap / 16);
    EXPECT_EQ(st.rows() + st.evicted_rows(), 150000u);
  }
  auto present = [&](const std::vector<uint64_t>& ids) {
    const TablePull p = test::PullOne(*client_, 2, ids, wire::EVAL);
    int n = 0;
    for (float v : p.values) n += v != 0.0f;
    return n;
  };
  for (int r = 0; r < 40; ++r) EXPECT_EQ(present(pushes[r]), 0) << "push " << r;
  for (int r = 110; r < 150; ++r) EXPECT_EQ(present(pushes[r]), 1000) << "push " << r;
}

// An evicted ID that comes back gets a new row, initialised as a new row (the
// initializer's values and n_j 0), not its old trained weights.
TEST_F(EvictTest, AnEvictedIdThatReturnsGetsAFreshRow) {
  const uint64_t x = Id(99, 0);
  const TablePull first = test::PullOne(*client_, 1, {x});  // creates the row
  Step(1, {x});
  const TablePull trained = test::PullOne(*client_, 1, {x}, wire::EVAL);
  ASSERT_NE(trained.values, first.values);
  ASSERT_EQ(trained.counts[0], 1u);
  for (int s = 0; s < 12; ++s) {
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < 100; ++i) ids.push_back(Id(200 + s, i));
    Step(1, ids);
  }
  ASSERT_FALSE(Present(1, x));
  const TablePull again = test::PullOne(*client_, 1, {x});
  EXPECT_EQ(again.values, first.values);
  EXPECT_EQ(again.counts[0], 0u);
}

// A dump holds exactly the rows alive: no evicted ID appears in it.
TEST_F(EvictTest, EvictedIdsNeverAppearInDumps) {
  std::vector<uint64_t> all;
  for (int s = 0; s < 15; ++s) {
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < 100; ++i) ids.push_back(Id(300 + s, i));
    all.insert(all.end(), ids.begin(), ids.end());
    Step(0, ids);
  }
  ASSERT_GT(Evicted(0), 0u);
  test::TempDir dir("evict_dump");
  ASSERT_TRUE(DumpTables(*client_, cfg_, dir.path(), 1).ok());
  const std::string stem = dir.path() + "/lfu/" + DumpPartStem(0, 1);
  const std::string ids = test::ReadFile(stem + ".ids.npy");
  auto header = ParseNpyHeader(ids, stem);
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  std::set<uint64_t> dumped;
  for (size_t off = header->header_bytes; off + 8 <= ids.size(); off += 8) {
    uint64_t id;
    std::memcpy(&id, ids.data() + off, 8);
    EXPECT_TRUE(dumped.insert(id).second) << "ID " << id << " dumped twice";
  }
  EXPECT_EQ(dumped.size(), Rows(0));
  size_t present = 0;
  for (uint64_t id : all) {
    const bool alive = Present(0, id);
    present += alive;
    EXPECT_EQ(dumped.count(id), alive ? 1u : 0u) << id;
  }
  EXPECT_EQ(present, dumped.size());
}

}  // namespace
}  // namespace din
