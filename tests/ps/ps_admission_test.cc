// Feature admission through PsClient and real server lanes (docs/design.md §5): PREPASS
// counts gathered by the lanes and turned into rows by ADMIT, most frequent first; exact
// admission by min_count; the default row of IDs without one. Every expectation is
// computed here from the counts the test generates, not read back from the servers.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "common/hash.h"
#include "tests/testing/config.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/temp_dir.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

constexpr uint32_t kCap = 40;
constexpr uint32_t kMinCount = 3;
constexpr uint64_t kTtl = 3;

// Table 0: capped at kCap rows per shard, SKIP_NEW. Table 1: exact admission. Table 2:
// admission with a shared default row, SGD at learning rate 1 (a push moves it by -g).
// Table 3: capped at kCap rows per shard, when_full: FAIL. Tables 4 and 5: the same but
// for ttl_steps: kTtl on table 4.
std::string ConfigText(bool admission) {
  const std::string adm =
      admission ? "admission { min_count: " + std::to_string(kMinCount) + " } " : "";
  const std::string shared =
      admission ? "admission { min_count: " + std::to_string(kMinCount) + " default_row: SHARED } "
                : "";
  return test::Table("capped", 2, 2,
                     "max_rows_per_shard: " + std::to_string(kCap) + " when_full: SKIP_NEW") +
         test::Table("admit", 2, 2, adm + "optimizer { sgd { learning_rate: 1 } }") +
         test::Table("shared", 2, 1,
                     shared +
                         "initializer { kind: NORMAL stddev: 0.5 } "
                         "optimizer { sgd { learning_rate: 1 } }") +
         test::Table("failcap", 2, 2, "max_rows_per_shard: " + std::to_string(kCap)) +
         test::Table("ttl", 3, 2,
                     "ttl_steps: " + std::to_string(kTtl) +
                         " initializer { kind: NORMAL stddev: 0.5 } "
                         "optimizer { adagrad { learning_rate: 0.3 } }") +
         test::Table("nottl", 3, 2,
                     "initializer { kind: NORMAL stddev: 0.5 } "
                     "optimizer { adagrad { learning_rate: 0.3 } }") +
         "ps { request_timeout_ms: 10000 }\n";
}

// n_j of 300 IDs, Zipf-like with many ties (so the tie order matters too).
std::map<uint64_t, uint32_t> MakeCounts() {
  std::map<uint64_t, uint32_t> n;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    const uint64_t id = Mix64(static_cast<uint64_t>(i) + 1) >> 8;
    n[id] = std::max(1u, static_cast<uint32_t>(60.0 / std::pow(1.0 + (rng() % 40), 1.1)));
  }
  return n;
}

// Pushes the counts of `table` as PREPASS counts of three workers: each ID's n_j split
// into three random parts, each worker's IDs in a random order.
void PushPrepass(PsClient& client, int table, const std::map<uint64_t, uint32_t>& n) {
  std::mt19937_64 rng(11 + table);
  std::vector<std::vector<std::pair<uint64_t, uint32_t>>> workers(3);
  for (const auto& [id, c] : n) {
    const uint32_t a = static_cast<uint32_t>(rng() % (c + 1));
    const uint32_t b = static_cast<uint32_t>(rng() % (c - a + 1));
    const uint32_t parts[3] = {a, b, c - a - b};
    for (int w = 0; w < 3; ++w)
      if (parts[w] > 0) workers[w].push_back({id, parts[w]});
  }
  for (auto& w : workers) {
    std::shuffle(w.begin(), w.end(), rng);
    std::vector<uint64_t> ids;
    std::vector<uint32_t> counts;
    for (const auto& [id, c] : w) {
      ids.push_back(id);
      counts.push_back(c);
    }
    CountSpec spec{table, ids, counts};
    auto h = client.PushCounts({&spec, 1}, /*prepass=*/true);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(client.Wait(*h).ok());
  }
}

std::vector<uint64_t> Keys(const std::map<uint64_t, uint32_t>& n) {
  std::vector<uint64_t> ids;
  for (const auto& [id, c] : n) ids.push_back(id);
  return ids;
}

struct TableStats {
  uint64_t rows = 0, admitted = 0, rejected = 0, rejected_keys = 0, skipped = 0;
};
TableStats StatsOf(PsClient& client, uint32_t table) {
  auto stats = client.Stats();
  CHECK(stats.ok()) << stats.status().ToString();
  TableStats s;
  for (const auto& st : *stats) {
    if (st.table() != table) continue;
    s.rows += st.rows();
    s.admitted += st.admitted_ids();
    s.rejected += st.rejected_ids();
    s.rejected_keys += st.rejected_keys();
    s.skipped += st.skipped_keys();
  }
  return s;
}

class AdmissionTest : public ::testing::Test {
 protected:
  AdmissionTest()
      : cfg_(test::MustParse(ConfigText(true))),
        cluster_(cfg_, 2, 2),
        client_(cluster_.Connect()) {}
  config::TrainConfig cfg_;
  test::LocalCluster cluster_;
  std::unique_ptr<PsClient> client_;
  const std::map<uint64_t, uint32_t> n_ = MakeCounts();
};

TEST_F(AdmissionTest, PrepassUnderSkipNewKeepsTheMostFrequentIds) {
  PushPrepass(*client_, 0, n_);
  EXPECT_EQ(StatsOf(*client_, 0).rows, 0u) << "PREPASS counts created rows before ADMIT";
  ASSERT_TRUE(client_->Admit().ok());
  // The independent ranking: per shard, n_j descending then ID ascending; the first kCap.
  std::map<uint32_t, std::vector<std::pair<uint64_t, uint32_t>>> by_shard;
  for (const auto& [id, c] : n_) by_shard[ShardOf(id, 2)].push_back({id, c});
  std::set<uint64_t> kept;
  for (auto& [shard, v] : by_shard) {
    ASSERT_GT(v.size(), kCap) << "the test needs a full shard";
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    for (uint32_t i = 0; i < kCap; ++i) kept.insert(v[i].first);
  }
  const std::vector<uint64_t> ids = Keys(n_);
  const TablePull pull = test::PullOne(*client_, 0, ids, wire::EVAL);
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t want = kept.count(ids[i]) ? n_.at(ids[i]) : 0;
    EXPECT_EQ(pull.counts[pull.index[i]], want) << "id " << ids[i] << " with n_j " << n_.at(ids[i]);
  }
  const TableStats s = StatsOf(*client_, 0);
  EXPECT_EQ(s.rows, 2u * kCap);
  EXPECT_EQ(s.admitted, 2u * kCap);
  EXPECT_EQ(s.skipped, n_.size() - 2u * kCap);
}

TEST_F(AdmissionTest, PrepassPastAFailCapIsRefusedBeforeAnyRowIsCreated) {
  PushPrepass(*client_, 3, n_);
  const Status st = client_->Admit();
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.ToString().find("max_rows_per_shard = 40"), std::string::npos) << st.ToString();
  EXPECT_EQ(StatsOf(*client_, 3).rows, 0u);
}

TEST_F(AdmissionTest, MinCountIsExactAndARefusedIdNeverGetsARow) {
  PushPrepass(*client_, 1, n_);
  ASSERT_TRUE(client_->Admit().ok());
  std::vector<uint64_t> admitted, refused;
  for (const auto& [id, c] : n_) (c >= kMinCount ? admitted : refused).push_back(id);
  ASSERT_FALSE(admitted.empty());
  ASSERT_FALSE(refused.empty());
  TableStats s = StatsOf(*client_, 1);
  EXPECT_EQ(s.rows, admitted.size());
  EXPECT_EQ(s.admitted, admitted.size());
  EXPECT_EQ(s.rejected, refused.size());
  const TablePull before = test::PullOne(*client_, 1, admitted, wire::EVAL);
  for (size_t i = 0; i < admitted.size(); ++i)
    EXPECT_EQ(before.counts[before.index[i]], n_.at(admitted[i]));

  // Every path that creates rows: a training pull, a push, counts, PREPASS counts again.
  TablePull pull = test::PullOne(*client_, 1, refused, wire::TRAIN);
  for (float v : pull.values) EXPECT_EQ(v, 0.0f);
  for (uint32_t c : pull.counts) EXPECT_EQ(c, 0u);
  test::PushOne(*client_, 1, refused, std::vector<float>(refused.size() * 2, 1.0f));
  std::vector<uint32_t> many(refused.size(), 100);
  CountSpec spec{1, refused, many};
  for (bool prepass : {false, true}) {
    auto h = client_->PushCounts({&spec, 1}, prepass);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(client_->Wait(*h).ok());
  }
  ASSERT_TRUE(client_->Admit().ok());
  s = StatsOf(*client_, 1);
  EXPECT_EQ(s.rows, admitted.size());
  // The training pull, the push, the counts and the second ADMIT, one key each.
  EXPECT_EQ(s.rejected_keys, 4 * refused.size());
  // The admitted rows did not move.
  const TablePull after = test::PullOne(*client_, 1, admitted, wire::EVAL);
  EXPECT_EQ(after.values, before.values);
  EXPECT_EQ(after.counts, before.counts);
}

TEST_F(AdmissionTest, LoadAdmitsOnlyRowsAtMinCount) {
  // A checkpoint of a job without admission holds a row for every ID, with its n_j.
  const config::TrainConfig open_cfg = test::MustParse(ConfigText(false));
  test::LocalCluster open_cluster(open_cfg, 1, 1);
  auto open_client = open_cluster.Connect();
  const std::vector<uint64_t> ids = Keys(n_);
  std::vector<uint32_t> counts;
  for (uint64_t id : ids) counts.push_back(n_.at(id));
  CountSpec spec{1, ids, counts};
  auto h = open_client->PushCounts({&spec, 1});
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(open_client->Wait(*h).ok());
  ASSERT_EQ(StatsOf(*open_client, 1).rows, ids.size());
  test::TempDir dir("admission");
  ASSERT_TRUE(SaveTables(*open_client, open_cfg, dir.path(), 5).ok());

  auto loaded = LoadTables(*client_, cfg_, dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  uint64_t want = 0;
  for (const auto& [id, c] : n_) want += c >= kMinCount;
  EXPECT_EQ(StatsOf(*client_, 1).rows, want);
  // Admission is closed after a load: a training pull creates nothing.
  test::PullOne(*client_, 1, ids, wire::TRAIN);
  EXPECT_EQ(StatsOf(*client_, 1).rows, want);
}

TEST_F(AdmissionTest, SharedDefaultRowIsReadAndTrainedByIdsWithoutARow) {
  PushPrepass(*client_, 2, n_);
  ASSERT_TRUE(client_->Admit().ok());
  std::vector<uint64_t> refused;
  uint64_t admitted = 0;
  for (const auto& [id, c] : n_) c >= kMinCount ? ++admitted : (refused.push_back(id), 0);
  ASSERT_GE(refused.size(), 2u);
  EXPECT_EQ(StatsOf(*client_, 2).rows, admitted);
  const std::vector<uint64_t> two = {refused[0], refused[1]};
  const TablePull d0 = test::PullOne(*client_, 2, two, wire::TRAIN);
  // Both read the same, non-zero (initialised) row with count 0.
  ASSERT_EQ(d0.values.size(), 4u);
  EXPECT_EQ(d0.values[0], d0.values[2]);
  EXPECT_EQ(d0.values[1], d0.values[3]);
  EXPECT_NE(d0.values[0], 0.0f);
  EXPECT_EQ(d0.counts, (std::vector<uint32_t>{0, 0}));
  // One push of both: SGD at rate 1 moves the shared row by minus the sum of gradients.
  test::PushOne(*client_, 2, two, {0.25f, -0.5f, 0.125f, 1.0f});
  const TablePull d1 = test::PullOne(*client_, 2, {refused[2]}, wire::EVAL);
  EXPECT_FLOAT_EQ(d1.values[0], d0.values[0] - 0.375f);
  EXPECT_FLOAT_EQ(d1.values[1], d0.values[1] - 0.5f);
  EXPECT_EQ(StatsOf(*client_, 2).rows, admitted);
}

TEST_F(AdmissionTest, SynchronousStepTrainsTheSharedRowOnceWithTheStepsMean) {
  PushPrepass(*client_, 2, n_);
  ASSERT_TRUE(client_->Admit().ok());
  std::vector<uint64_t> refused;
  for (const auto& [id, c] : n_)
    if (c < kMinCount) refused.push_back(id);
  ASSERT_GE(refused.size(), 3u);
  const TablePull d0 = test::PullOne(*client_, 2, {refused[0]}, wire::EVAL);
  // One worker, 4 samples: the shared row moves by -(sum of the IDs' sums) / 4.
  const std::vector<uint64_t> ids = {refused[0], refused[1]};
  const std::vector<float> sums = {1.0f, -2.0f, 0.5f, 1.0f};
  PushSpec spec{2, ids, sums};
  wire::SyncStep sync;
  sync.set_step(1);
  sync.set_worker(0);
  sync.set_workers(1);
  sync.set_samples(4);
  auto h = client_->PushStep({&spec, 1}, sync);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE(client_->Wait(*h).ok());
  const TablePull d1 = test::PullOne(*client_, 2, {refused[2]}, wire::EVAL);
  EXPECT_FLOAT_EQ(d1.values[0], d0.values[0] - 1.5f / 4);
  EXPECT_FLOAT_EQ(d1.values[1], d0.values[1] + 1.0f / 4);
}

// Synchronous steps of one worker: keep[] pushed every step, drop[] only at step 1. A
// row is evicted once more than kTtl steps passed since its last push; the kept rows
// are bit-identical to those of the same table without ttl_steps.
TEST_F(AdmissionTest, TtlEvictsRowsNotPushedForMoreThanTtlStepsAndLeavesTheOthers) {
  const std::vector<uint64_t> keep = test::SpreadIds(5, 30), drop = test::SpreadIds(7, 20);
  std::vector<uint64_t> both = keep;
  both.insert(both.end(), drop.begin(), drop.end());
  auto step = [&](uint64_t n, const std::vector<uint64_t>& ids) {
    std::vector<float> g(ids.size() * 3);
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.01f * static_cast<float>(i % 17) - 0.07f;
    PushSpec specs[2] = {{4, ids, g}, {5, ids, g}};
    wire::SyncStep sync;
    sync.set_step(n);
    sync.set_worker(0);
    sync.set_workers(1);
    sync.set_samples(8);
    auto h = client_->PushStep(specs, sync);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(client_->Wait(*h).ok());
  };
  auto evicted = [&](uint32_t table) {
    auto stats = client_->Stats();
    uint64_t n = 0;
    for (const auto& st : *stats)
      if (st.table() == table) n += st.evicted_rows();
    return n;
  };
  step(1, both);
  for (uint64_t n = 2; n <= 1 + kTtl; ++n) step(n, keep);
  // kTtl steps without a push: still there (the sweep ran after every request).
  EXPECT_EQ(StatsOf(*client_, 4).rows, both.size());
  step(2 + kTtl, keep);
  EXPECT_EQ(StatsOf(*client_, 4).rows, keep.size());
  EXPECT_EQ(evicted(4), drop.size());
  EXPECT_EQ(StatsOf(*client_, 5).rows, both.size());
  EXPECT_EQ(evicted(5), 0u);
  const TablePull gone = test::PullOne(*client_, 4, drop, wire::EVAL);
  for (float v : gone.values) EXPECT_EQ(v, 0.0f);
  const TablePull a = test::PullOne(*client_, 4, keep, wire::EVAL);
  const TablePull b = test::PullOne(*client_, 5, keep, wire::EVAL);
  EXPECT_EQ(a.values, b.values);
  // A dropped ID that comes back gets a fresh row in the freed memory.
  step(3 + kTtl, drop);
  EXPECT_EQ(StatsOf(*client_, 4).rows, both.size());
}

// A resumed job continues at a late step number: rows loaded from a checkpoint count
// their age from the first step after the load, so they are not all evicted at once.
TEST_F(AdmissionTest, TtlCountsLoadedRowsFromTheFirstStepAfterTheLoad) {
  const std::vector<uint64_t> ids = test::SpreadIds(9, 25);
  test::PushOne(*client_, 4, ids, std::vector<float>(ids.size() * 3, 0.5f));
  test::TempDir dir("ttl");
  ASSERT_TRUE(SaveTables(*client_, cfg_, dir.path(), 1).ok());
  test::LocalCluster fresh(cfg_, 2, 2);
  auto client = fresh.Connect();
  ASSERT_TRUE(LoadTables(*client, cfg_, dir.path()).ok());
  ASSERT_EQ(StatsOf(*client, 4).rows, ids.size());
  auto step = [&](uint64_t n) {
    const std::vector<uint64_t> one = {ids[0]};
    const std::vector<float> g(3, 0.1f);
    PushSpec spec{4, one, g};
    wire::SyncStep sync;
    sync.set_step(n);
    sync.set_worker(0);
    sync.set_workers(1);
    sync.set_samples(1);
    auto h = client->PushStep({&spec, 1}, sync);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(client->Wait(*h).ok());
  };
  for (uint64_t n = 1000; n <= 1000 + kTtl; ++n) step(n);
  EXPECT_EQ(StatsOf(*client, 4).rows, ids.size());
  step(1001 + kTtl);
  EXPECT_EQ(StatsOf(*client, 4).rows, 1u);
}

}  // namespace
}  // namespace din
