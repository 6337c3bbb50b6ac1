// Evaluation (worker/evaluation.h): the metrics of gathered predictions, the averaging
// of the Dice statistics over the workers, and a whole Evaluator run in one process
// against servers on loopback, with a fake second worker: its Dice statistics enter
// the average before predicting, its predictions enter the metrics, evaluation pulls
// create no rows, and only worker 0 gets the metrics.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/reader.h"
#include "tests/testing/local_cluster.h"
#include "tests/worker/fake_collective.h"
#include "worker/evaluation.h"
#include "worker/model/backend.h"

namespace din {
namespace {

using test::FakeCollective;
using test::LocalCluster;
using test::MustParse;
using test::PullOne;
using test::TotalRows;

std::vector<std::byte> Bytes(const std::vector<Prediction>& p) {
  const auto b = std::as_bytes(std::span<const Prediction>(p));
  return {b.begin(), b.end()};
}

TEST(EvaluationTest, MetricsOfPredictionsGatheredFromSeveralWorkers) {
  // Worker 0: user 1 ranks its positive first; worker 1: user 2 ranks it last.
  std::vector<std::byte> all = Bytes({{1, 1, 0.9f}, {1, 0, 0.2f}});
  const auto w1 = Bytes({{2, 1, 0.3f}, {2, 0, 0.6f}});
  all.insert(all.end(), w1.begin(), w1.end());
  const EvalMetrics m = MetricsOfPredictions(all);
  EXPECT_EQ(m.samples, 4u);
  EXPECT_EQ(m.positives, 2u);
  EXPECT_DOUBLE_EQ(m.auc, 0.75) << "3 of 4 positive-negative pairs ordered";
  EXPECT_EQ(m.gauc_users, 2u);
  EXPECT_DOUBLE_EQ(m.gauc, 0.5) << "user 1: AUC 1, user 2: AUC 0, 2 samples each";
  const double logloss =
      -(std::log(0.9f) + std::log(1 - 0.2f) + std::log(0.3f) + std::log(1 - 0.6f)) / 4;
  EXPECT_NEAR(m.logloss, logloss, 1e-6);
  EXPECT_EQ(MetricsOfPredictions({}).samples, 0u);
}

TEST(EvaluationTest, AverageRunningStatsIsTheMeanOverWorkers) {
  FakeCollective three(0, 3);
  three.others = {2 + 3, 4 + 6, 6 + 9};  // the other two workers' statistics, summed
  std::vector<float> stats = {1, 2, 3};
  ASSERT_TRUE(AverageRunningStats(three, stats).ok());
  EXPECT_FLOAT_EQ(stats[0], 2);
  EXPECT_FLOAT_EQ(stats[1], 4);
  EXPECT_FLOAT_EQ(stats[2], 6);

  FakeCollective one(0, 1);
  one.others = {100, 100, 100};
  stats = {1, 2, 3};
  ASSERT_TRUE(AverageRunningStats(one, stats).ok());
  EXPECT_EQ(stats, (std::vector<float>{1, 2, 3})) << "one worker: nothing to average";
  EXPECT_EQ(one.float_reduces, 0);

  FakeCollective broken(0, 2);
  broken.fail = Status::Unavailable("a worker died");
  EXPECT_EQ(AverageRunningStats(broken, stats).code(), StatusCode::kUnavailable);
}

constexpr char kConfig[] = R"pb(
  tables {
    name: "user"
    dim: 4
    shards: 2
    initializer { kind: NORMAL stddev: 0.5 }
  }
  tables {
    name: "item"
    dim: 4
    shards: 2
    initializer { kind: NORMAL stddev: 0.5 }
  }
  tables {
    name: "cate"
    dim: 4
    shards: 1
    initializer { kind: NORMAL stddev: 0.5 }
  }
  ps { request_timeout_ms: 10000 }
  model {
    attention_hidden: [ 8 ]
    top_hidden: [ 8 ]
  }
  trainer { backend: "cpu" eval_batch_size: 3 }
)pb";

class EvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::path(::testing::TempDir()) /
            ("evaluation_test_" + std::to_string(getpid())))
               .string();
    std::filesystem::create_directories(dir_);
    test_ = dir_ + "/test.tsv";
    std::ofstream out(test_);
    // label user item cate hist_items hist_cates; users 1-4, items 100-105.
    for (int i = 0; i < 23; ++i) {
      out << (i * 7 % 3 == 0 ? 1 : 0) << '\t' << 1 + i % 4 << '\t' << 100 + i % 6 << '\t'
          << 10 + i % 2 << '\t';
      if (i % 5 != 0) out << 100 + (i + 1) % 6 << ',' << 100 + (i + 3) % 6;
      out << '\t';
      if (i % 5 != 0) out << 10 + (i + 1) % 2 << ',' << 10 + (i + 3) % 2;
      out << '\n';
    }
    cfg_ = MustParse(std::string(kConfig) + "data { batch_size: 8 shuffle_buffer: 0 test_path: \"" +
                     test_ + "\" train_path: \"" + test_ + "\" }\n");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_, test_;
  config::TrainConfig cfg_;
  const model::FieldTables tables_{{0}, {1, 2}, {}};
  const std::vector<int> dims_{4, 4, 4};
};

TEST_F(EvaluatorTest, PredictsItsPartWithAveragedStatisticsAndGathers) {
  LocalCluster cluster(cfg_, 1, 2);
  auto client = cluster.Connect();
  // Some rows exist (training pulls create them); the others read as zeros.
  PullOne(*client, 0, {1, 2});
  PullOne(*client, 1, {100, 101, 102});
  PullOne(*client, 2, {10});
  const uint64_t rows = TotalRows(*client);

  auto backend = model::CreateBackend("cpu", cfg_.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(backend.ok());
  auto running = (*backend)->running_stats();
  ASSERT_GT(running.size(), 0u) << "the model has Dice layers";
  FakeCollective coll(0, 2);
  for (size_t i = 0; i < running.size(); ++i) {
    running[i] = 0.5f + 0.01f * static_cast<float>(i);
    coll.others.push_back(1.5f - 0.02f * static_cast<float>(i));
  }
  std::vector<float> mean(running.size());
  for (size_t i = 0; i < running.size(); ++i) mean[i] = (running[i] + coll.others[i]) * 0.5f;
  const std::vector<Prediction> other = {{7, 1, 0.8f}, {7, 0, 0.4f}, {3, 1, 0.1f}};
  coll.other_bytes = Bytes(other);

  Evaluator ev(cfg_, tables_, dims_, client.get(), &coll, backend->get());
  auto m = ev.Run();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_GE(coll.barriers, 1) << "every worker's pushes are applied first";
  for (size_t i = 0; i < running.size(); ++i) ASSERT_FLOAT_EQ(running[i], mean[i]) << i;
  EXPECT_EQ(TotalRows(*client), rows) << "evaluation pulls create no rows";

  // The expected predictions: worker 0's part of the test set in one batch, with a
  // backend of our own holding the same weights and the averaged statistics.
  auto ref = model::CreateBackend("cpu", cfg_.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(ref.ok());
  std::copy(mean.begin(), mean.end(), (*ref)->running_stats().begin());
  ASSERT_EQ((*ref)->params().size(), (*backend)->params().size());
  std::copy((*backend)->params().begin(), (*backend)->params().end(), (*ref)->params().begin());
  config::DataConfig data = cfg_.data();
  data.set_batch_size(1000);
  auto reader = Reader::OpenTest(data, 0, 2);
  ASSERT_TRUE(reader.ok());
  Batch batch;
  ASSERT_TRUE(*(*reader)->NextBatch(&batch));
  ASSERT_GT(batch.size, 0u);
  ASSERT_LT(batch.size, 23u) << "worker 0 reads only its part";
  model::InputBuilder builder(tables_, dims_);
  model::ModelInput input;
  ASSERT_TRUE(builder.Build(batch, &input).ok());
  std::vector<TablePull> pulls(3);
  for (int t = 0; t < 3; ++t) {
    const auto ids = builder.unique_ids(t);
    pulls[t] = PullOne(*client, t, {ids.begin(), ids.end()}, wire::EVAL);
    input.tables[t].data = pulls[t].values.data();
  }
  std::vector<float> logits(batch.size);
  ASSERT_TRUE((*ref)->Predict(input, logits).ok());
  EvalAccumulator acc;
  for (size_t i = 0; i < batch.size; ++i)
    acc.Add(batch.users[i], batch.labels[i], 1.0f / (1.0f + std::exp(-logits[i])));
  for (const auto& p : other) acc.Add(p.user, p.label, p.prob);
  const EvalMetrics want = acc.Compute();
  EXPECT_EQ(m->samples, batch.size + 3);
  EXPECT_EQ(m->samples, want.samples);
  EXPECT_EQ(m->positives, want.positives);
  EXPECT_EQ(m->gauc_users, want.gauc_users);
  EXPECT_NEAR(m->auc, want.auc, 1e-9);
  EXPECT_NEAR(m->gauc, want.gauc, 1e-9);
  EXPECT_NEAR(m->logloss, want.logloss, 1e-6);
}

TEST_F(EvaluatorTest, OnlyWorkerZeroGetsMetrics) {
  LocalCluster cluster(cfg_, 1, 1);
  auto client = cluster.Connect();
  auto backend = model::CreateBackend("cpu", cfg_.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(backend.ok());
  FakeCollective coll(1, 2);
  Evaluator ev(cfg_, tables_, dims_, client.get(), &coll, backend->get());
  auto m = ev.Run();
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->samples, 0u);
}

TEST_F(EvaluatorTest, AMissingTestSetFails) {
  LocalCluster cluster(cfg_, 1, 1);
  auto client = cluster.Connect();
  auto backend = model::CreateBackend("cpu", cfg_.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(backend.ok());
  std::filesystem::remove(test_);
  FakeCollective coll(0, 1);
  Evaluator ev(cfg_, tables_, dims_, client.get(), &coll, backend->get());
  EXPECT_FALSE(ev.Run().ok());
}

}  // namespace
}  // namespace din
