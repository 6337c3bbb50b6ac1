// Online feature admission through PsClient and real server lanes (docs/design.md §5):
// with trainer.mba_mode ONLINE an ID gets a row once the count-min sketch of its shard
// estimates that its sightings reached min_count. Which IDs must have a row is decided by
// an exact count the test keeps itself; the sketch may only admit early, never late.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "common/hash.h"
#include "ps/admission_sketch.h"
#include "tests/testing/config.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/temp_dir.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

constexpr uint32_t kMinCount = 4;

// Table 0: a sketch far larger than the IDs need (exact in practice). Table 1: the same
// with 16 counters per shard, which must overcount. Table 2: a large sketch, a shared
// default row, SGD at rate 1. Table 3: a large sketch, capped at kCap rows per shard,
// when_full: FAIL. Table 4: no min_count, admission.probability 0.3.
constexpr uint32_t kCap = 30;
constexpr double kProbability = 0.3;
std::string ConfigText(const std::string& mode) {
  const std::string adm = "min_count: " + std::to_string(kMinCount) + " ";
  return test::Table("big", 2, 2, "admission { " + adm + "sketch_bytes: 1048576 }") +
         test::Table("tiny", 2, 2, "admission { " + adm + "sketch_bytes: 128 sketch_depth: 2 }") +
         test::Table("shared", 2, 1,
                     "admission { " + adm +
                         "default_row: SHARED } initializer { kind: NORMAL stddev: 0.5 } "
                         "optimizer { sgd { learning_rate: 1 } }") +
         test::Table("failcap", 2, 2,
                     "max_rows_per_shard: " + std::to_string(kCap) + " admission { " + adm + "}") +
         test::Table("draw", 2, 2,
                     "admission { probability: " + std::to_string(kProbability) + " }") +
         "trainer { mba_mode: " + mode + " }\nps { request_timeout_ms: 10000 }\n";
}

// Batches of a stream: each a map ID -> samples containing it, Zipf-like over 400 IDs.
std::vector<std::map<uint64_t, uint32_t>> MakeStream(int batches, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> pool;
  for (int i = 0; i < 400; ++i) pool.push_back(Mix64(static_cast<uint64_t>(i) + 77) >> 8);
  std::vector<std::map<uint64_t, uint32_t>> stream(batches);
  for (auto& batch : stream)
    for (int s = 0; s < 60; ++s) {
      // Rank r with probability ~ 1 / (r + 1).
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      const auto r = static_cast<size_t>(std::pow(401.0, u)) - 1;
      ++batch[pool[std::min<size_t>(r, pool.size() - 1)]];
    }
  return stream;
}

void PushCounts(PsClient& client, int table, const std::map<uint64_t, uint32_t>& batch) {
  std::vector<uint64_t> ids;
  std::vector<uint32_t> counts;
  for (const auto& [id, c] : batch) {
    ids.push_back(id);
    counts.push_back(c);
  }
  CountSpec spec{table, ids, counts};
  auto h = client.PushCounts({&spec, 1});
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE(client.Wait(*h).ok());
}

// Per ID of `ids`: its count on the servers (0: no row; admitted rows start at >= 1).
std::map<uint64_t, uint32_t> RowCounts(PsClient& client, int table,
                                       const std::vector<uint64_t>& ids) {
  const TablePull pull = test::PullOne(client, table, ids, wire::EVAL);
  std::map<uint64_t, uint32_t> out;
  for (size_t i = 0; i < ids.size(); ++i) out[ids[i]] = pull.counts[pull.index[i]];
  return out;
}

struct TableStats {
  uint64_t rows = 0, admitted = 0, rejected_keys = 0, bytes = 0;
};
TableStats StatsOf(PsClient& client, uint32_t table) {
  auto stats = client.Stats();
  CHECK(stats.ok()) << stats.status().ToString();
  TableStats s;
  for (const auto& st : *stats) {
    if (st.table() != table) continue;
    s.rows += st.rows();
    s.admitted += st.admitted_ids();
    s.rejected_keys += st.rejected_keys();
    s.bytes += st.bytes();
  }
  return s;
}

TEST(AdmissionSketchTest, NeverUndercountsAndConservativeUpdateOnlyRaisesToTheKeysNeed) {
  AdmissionSketch sketch(64, 2, 5);  // 8 counters per row: many collisions
  std::map<uint64_t, uint64_t> exact;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t key = rng() % 100;
    const auto c = static_cast<uint32_t>(1 + rng() % 3);
    const uint32_t before = sketch.Estimate(key);
    EXPECT_EQ(sketch.Add(key, c), before + c);
    exact[key] += c;
  }
  uint64_t over = 0;
  for (const auto& [key, n] : exact) {
    EXPECT_GE(sketch.Estimate(key), n) << key;
    over += sketch.Estimate(key) - n;
  }
  EXPECT_GT(over, 0u) << "16 counters for 100 keys must overcount";
  // Plain count-min adds every count to each of its `depth` counters; conservative
  // update raises a counter only as far as the key's estimate needs.
  uint64_t sum = 0;
  for (uint32_t c : sketch.cells()) sum += c;
  EXPECT_LT(sum, 2 * sketch.total());
  EXPECT_EQ(sketch.MemoryBytes(), 64u);
  EXPECT_EQ(sketch.width(), 8u);
}

class OnlineAdmissionTest : public ::testing::Test {
 protected:
  OnlineAdmissionTest()
      : cfg_(test::MustParse(ConfigText("ONLINE"))),
        cluster_(cfg_, 2, 2),
        client_(cluster_.Connect()) {}
  config::TrainConfig cfg_;
  test::LocalCluster cluster_;
  std::unique_ptr<PsClient> client_;
};

TEST_F(OnlineAdmissionTest, RowsAppearWhenTheExactCountReachesMinCountAndNeverLate) {
  const auto stream = MakeStream(40, 1);
  std::map<uint64_t, uint64_t> exact;
  std::vector<uint64_t> seen;
  uint64_t early = 0, sightings = 0;
  for (size_t b = 0; b < stream.size(); ++b) {
    PushCounts(*client_, 0, stream[b]);
    PushCounts(*client_, 1, stream[b]);
    for (const auto& [id, c] : stream[b]) {
      if (exact[id] == 0) seen.push_back(id);
      exact[id] += c;
      sightings += c;
    }
    if (b % 8 != 7 && b + 1 != stream.size()) continue;
    const auto big = RowCounts(*client_, 0, seen);
    const auto tiny = RowCounts(*client_, 1, seen);
    uint64_t want_rows = 0;
    for (uint64_t id : seen) {
      const bool due = exact[id] >= kMinCount;
      want_rows += due;
      // The large sketch is exact here: a row exactly when due, with the exact count.
      EXPECT_EQ(big.at(id), due ? exact[id] : 0u) << "id " << id << " batch " << b;
      // The tiny one: every due ID has a row, counting at least its sightings.
      if (due) {
        EXPECT_GE(tiny.at(id), exact[id]) << "id " << id << " refused late";
      }
      if (!due && tiny.at(id) > 0) ++early;
    }
    const TableStats s = StatsOf(*client_, 0);
    EXPECT_EQ(s.rows, want_rows);
    EXPECT_EQ(s.admitted, want_rows);
  }
  EXPECT_GT(early, 0u) << "a 16-counter sketch should have admitted some ID early";
  // Not admitted: a training pull reads zeros with count 0 and creates no row; a push
  // to such IDs is dropped.
  std::vector<uint64_t> out;
  for (uint64_t id : seen)
    if (exact[id] < kMinCount) out.push_back(id);
  ASSERT_FALSE(out.empty());
  const uint64_t rows = StatsOf(*client_, 0).rows;
  const TablePull pull = test::PullOne(*client_, 0, out, wire::TRAIN);
  for (float v : pull.values) EXPECT_EQ(v, 0.0f);
  for (uint32_t c : pull.counts) EXPECT_EQ(c, 0u);
  test::PushOne(*client_, 0, out, std::vector<float>(out.size() * 2, 1.0f));
  EXPECT_EQ(StatsOf(*client_, 0).rows, rows);
  // The sketch memory is fixed and counted: 1 MiB over 2 shards.
  EXPECT_GE(StatsOf(*client_, 0).bytes, 1048576u);
  // One more sighting each admits exactly the IDs at min_count - 1.
  std::map<uint64_t, uint32_t> once;
  uint64_t due = 0;
  for (uint64_t id : out) {
    once[id] = 1;
    due += exact[id] + 1 >= kMinCount;
  }
  PushCounts(*client_, 0, once);
  EXPECT_EQ(StatsOf(*client_, 0).rows, rows + due);
}

TEST_F(OnlineAdmissionTest, SharedDefaultRowIsReadAndTrainedUntilAdmission) {
  const uint64_t a = 1001, b = 2002;
  const TablePull d0 = test::PullOne(*client_, 2, {a, b}, wire::TRAIN);
  EXPECT_EQ(d0.values[0], d0.values[2]);
  EXPECT_NE(d0.values[0], 0.0f);
  test::PushOne(*client_, 2, {a, b}, {0.25f, -0.5f, 0.125f, 1.0f});
  const TablePull d1 = test::PullOne(*client_, 2, {a}, wire::EVAL);
  EXPECT_FLOAT_EQ(d1.values[0], d0.values[0] - 0.375f);
  EXPECT_FLOAT_EQ(d1.values[1], d0.values[1] - 0.5f);
  // a reaches min_count: it gets a row of its own (the initializer's), b keeps the
  // shared one.
  PushCounts(*client_, 2, {{a, kMinCount - 1}, {b, 1}});
  EXPECT_EQ(StatsOf(*client_, 2).rows, 0u);
  PushCounts(*client_, 2, {{a, 1}});
  EXPECT_EQ(StatsOf(*client_, 2).rows, 1u);
  const TablePull d2 = test::PullOne(*client_, 2, {a, b}, wire::EVAL);
  EXPECT_EQ(d2.counts, (std::vector<uint32_t>{kMinCount, 0}));
  EXPECT_NE(d2.values[0], d1.values[0]);
  EXPECT_FLOAT_EQ(d2.values[2], d1.values[0]);
}

// The cap check counts only the IDs the counts would admit: a request with more absent
// IDs than the cap allows passes when few of them reach min_count, and one whose
// admitted IDs do not fit is refused before anything changes (sketch included).
TEST_F(OnlineAdmissionTest, FailCapCountsOnlyAdmittedIds) {
  std::map<uint64_t, uint32_t> many;
  for (uint64_t id : test::SpreadIds(5, 200)) many[id] = 1;
  PushCounts(*client_, 3, many);  // 200 absent IDs, none admitted: fits
  EXPECT_EQ(StatsOf(*client_, 3).rows, 0u);
  std::map<uint64_t, uint32_t> all_due;
  for (const auto& [id, c] : many) all_due[id] = kMinCount - 1;
  std::vector<uint64_t> ids;
  std::vector<uint32_t> counts;
  for (const auto& [id, c] : all_due) {
    ids.push_back(id);
    counts.push_back(c);
  }
  CountSpec spec{3, ids, counts};
  auto h = client_->PushCounts({&spec, 1});
  ASSERT_TRUE(h.ok());
  const Status st = client_->Wait(*h);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_EQ(StatsOf(*client_, 3).rows, 0u);
  // The refused request left the sketch alone: one more sighting admits none.
  PushCounts(*client_, 3, many);
  EXPECT_EQ(StatsOf(*client_, 3).rows, 0u);
}

// admission.probability: each sighting past min_count admits with probability p, drawn
// from (table seed, ID, sighting number): a fixed seed gives fixed, reproducible
// admissions whose frequencies match p.
TEST_F(OnlineAdmissionTest, ProbabilityAdmitsAtTheRateAndReproducibly) {
  const std::vector<uint64_t> ids = test::SpreadIds(11, 3000, 7919);
  std::map<uint64_t, uint32_t> once;
  for (uint64_t id : ids) once[id] = 1;
  PushCounts(*client_, 4, once);
  const auto first = RowCounts(*client_, 4, ids);
  uint64_t n1 = 0;
  for (const auto& [id, c] : first) n1 += c > 0;
  // Binomial(3000, 0.3): mean 900, sd 25; within 5 sd.
  EXPECT_NEAR(static_cast<double>(n1), 900.0, 125.0);
  PushCounts(*client_, 4, once);
  const auto second = RowCounts(*client_, 4, ids);
  uint64_t n2 = 0;
  for (const auto& [id, c] : second) {
    n2 += c > 0;
    if (first.at(id) > 0) {
      EXPECT_EQ(c, 2u);  // admitted rows keep counting
    }
  }
  // After two sightings: 1 - 0.7^2 = 0.51 of them.
  EXPECT_NEAR(static_cast<double>(n2), 1530.0, 5 * std::sqrt(3000 * 0.51 * 0.49));
  // The same sightings on a fresh cluster admit the same IDs; with PREPASS counts of 2
  // ADMIT makes the same draws.
  for (const std::string mode : {"ONLINE", "PREPASS"}) {
    const config::TrainConfig cfg = test::MustParse(ConfigText(mode));
    test::LocalCluster other(cfg, 1, 3);
    auto client = other.Connect();
    if (mode == "ONLINE") {
      PushCounts(*client, 4, once);
      PushCounts(*client, 4, once);
    } else {
      std::vector<uint32_t> twos(ids.size(), 2);
      CountSpec spec{4, ids, twos};
      auto h = client->PushCounts({&spec, 1}, /*prepass=*/true);
      ASSERT_TRUE(h.ok());
      ASSERT_TRUE(client->Wait(*h).ok());
      ASSERT_TRUE(client->Admit().ok());
    }
    const auto again = RowCounts(*client, 4, ids);
    for (uint64_t id : ids) EXPECT_EQ(again.at(id) > 0, second.at(id) > 0) << mode << " " << id;
  }
}

// A checkpoint carries the admission sketch, the shared default rows and each row's
// last-push step: a job resumed from it (fresh servers) admits, trains and evicts as
// the uninterrupted one. One table with all three: online admission with a small
// sketch, a SHARED default row and ttl_steps.
TEST(OnlineAdmissionResumeTest, ResumedFromACheckpointEndsLikeTheUninterruptedRun) {
  const config::TrainConfig cfg = test::MustParse(
      test::Table("adm", 2, 2,
                  "admission { min_count: 3 default_row: SHARED sketch_bytes: 2048 } "
                  "ttl_steps: 4 initializer { kind: NORMAL stddev: 0.5 } "
                  "optimizer { adagrad { learning_rate: 0.3 } }") +
      "trainer { mba_mode: ONLINE }\nps { request_timeout_ms: 10000 }\n");
  const auto stream = MakeStream(24, 5);
  std::set<uint64_t> all{UINT64_MAX - 7};  // an ID never seen reads the shared row
  for (const auto& batch : stream)
    for (const auto& [id, c] : batch) all.insert(id);
  const std::vector<uint64_t> ids(all.begin(), all.end());
  // Step n: the batch's counts, then one synchronous step with gradients of its IDs.
  auto step = [&](PsClient& client, uint64_t n) {
    const auto& batch = stream[n - 1];
    PushCounts(client, 0, batch);
    std::vector<uint64_t> keys;
    std::vector<float> g;
    for (const auto& [id, c] : batch) {
      keys.push_back(id);
      g.push_back(0.01f * static_cast<float>(c) - 0.02f);
      g.push_back(0.03f - 0.005f * static_cast<float>(id % 13));
    }
    PushSpec spec{0, keys, g};
    wire::SyncStep sync;
    sync.set_step(n);
    sync.set_worker(0);
    sync.set_workers(1);
    sync.set_samples(60);
    auto h = client.PushStep({&spec, 1}, sync);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(client.Wait(*h).ok());
  };
  test::TempDir dir("online_resume");
  test::LocalCluster whole(cfg, 2, 2);
  auto a = whole.Connect();
  for (uint64_t n = 1; n <= 12; ++n) step(*a, n);
  ASSERT_TRUE(SaveTables(*a, cfg, dir.path(), 12).ok());
  for (uint64_t n = 13; n <= stream.size(); ++n) step(*a, n);

  test::LocalCluster resumed(cfg, 2, 2);
  auto b = resumed.Connect();
  auto loaded = LoadTables(*b, cfg, dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  for (uint64_t n = 13; n <= stream.size(); ++n) step(*b, n);

  auto stats = [](PsClient& client) {
    auto st = client.Stats();
    CHECK(st.ok());
    uint64_t rows = 0;
    for (const auto& s : *st) rows += s.rows();
    return rows;
  };
  const TablePull pa = test::PullOne(*a, 0, ids, wire::EVAL);
  const TablePull pb = test::PullOne(*b, 0, ids, wire::EVAL);
  EXPECT_EQ(stats(*b), stats(*a));
  EXPECT_GT(stats(*a), 0u);
  uint64_t differ = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t ia = pa.index[i], ib = pb.index[i];
    differ += pa.counts[ia] != pb.counts[ib] || pa.values[2 * ia] != pb.values[2 * ib] ||
              pa.values[2 * ia + 1] != pb.values[2 * ib + 1];
  }
  EXPECT_EQ(differ, 0u) << "of " << ids.size() << " IDs";
  // The run did evict rows (the TTL state mattered).
  auto evicted = a->Stats();
  uint64_t ev = 0;
  for (const auto& s : *evicted) ev += s.evicted_rows();
  EXPECT_GT(ev, 0u);
}

}  // namespace
}  // namespace din
