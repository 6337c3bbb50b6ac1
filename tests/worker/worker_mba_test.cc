// Mini-batch aware regularization end to end in one process: one worker (SoloCollective),
// one server on loopback, one training step with SGD on a hand-built batch. The test
// recomputes the model gradient with its own backend, n_j by hand and the rows from the
// initializer, and checks the pushed gradient, the rows after the step, and that rows
// of IDs outside the batch did not move.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/reader.h"
#include "common/data/schema.h"
#include "common/optim/row_initializer.h"
#include "tests/testing/local_cluster.h"
#include "worker/collective.h"
#include "worker/model/backend.h"
#include "worker/trainer.h"

namespace din {
namespace {

using test::LocalCluster;
using test::MustParse;
using test::PullOne;

// label user item cate hist_items hist_cates
constexpr char kData[] =
    "1\t1\t100\t10\t101,102\t10,11\n"
    "0\t2\t101\t10\t100\t10\n"
    "1\t1\t102\t11\t\t\n"
    "0\t3\t100\t10\t100,100\t10,10\n";

// n_j by hand: the number of samples whose fields contain j.
const std::map<std::string, std::map<uint64_t, uint32_t>> kCounts = {
    {"user", {{1, 2}, {2, 1}, {3, 1}}},
    {"item", {{100, 3}, {101, 2}, {102, 2}}},
    {"cate", {{10, 3}, {11, 2}}},
};

// IDs no sample contains; their rows exist before training.
const std::vector<uint64_t> kOutside = {7, 555, 1ull << 40};

std::string Config(const std::string& train, float lambda, const char* mode,
                   const char* sparse_step) {
  std::string tables;
  for (const char* name : {"user", "item", "cate"})
    tables += std::string("tables { name: \"") + name +
              "\" dim: 4 shards: 2 initializer { kind: NORMAL stddev: 0.3 } "
              "optimizer { sgd { learning_rate: 0.5 } } mba_lambda: " +
              std::to_string(lambda) + " }\n";
  return tables +
         "ps { request_timeout_ms: 10000 }\n"
         "model { attention_hidden: [8] top_hidden: [8] }\n"
         "data { batch_size: 16 shuffle_buffer: 0 train_path: \"" +
         train +
         "\" }\n"
         "trainer { epochs: 1 max_steps: 1 backend: \"cpu\" mba_mode: " +
         mode + " sparse_step: " + sparse_step + " }\n";
}

class MbaTest : public ::testing::TestWithParam<std::tuple<float, const char*, const char*>> {};

// ASYNC: the worker pushes the model gradient plus lambda * w / n and the server applies
// it. SYNC: the worker pushes the gradient summed over its samples (the batch mean times
// the batch size); the lane divides by the step's samples and adds lambda * w / n. Either
// way the row moves by the same step.
TEST_P(MbaTest, StepIsModelGradientPlusLambdaWOverN) {
  const auto [lambda, mode, sparse_step] = GetParam();
  const bool sync = std::string(sparse_step) == "SYNC";
  const std::string dir = ::testing::TempDir() + "/mba_test_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string train = dir + "/train.tsv";
  std::ofstream(train) << kData;
  const auto cfg = MustParse(Config(train, lambda, mode, sparse_step));

  LocalCluster cluster(cfg, 1, 2);
  auto client = cluster.Connect();
  // Rows outside the batch, created before training.
  std::vector<TablePull> outside_before;
  for (int t = 0; t < 3; ++t) outside_before.push_back(PullOne(*client, t, kOutside));

  // The pushes the trainer sends.
  struct Pushed {
    std::vector<uint64_t> ids;
    std::vector<float> model, pushed;
  };
  std::map<int, Pushed> pushes;
  SoloCollective solo;
  auto trainer = Trainer::Create(cfg, client.get(), &solo, {});
  ASSERT_TRUE(trainer.ok()) << trainer.status().ToString();
  (*trainer)->set_push_observer([&](int t, std::span<const uint64_t> ids,
                                    std::span<const float> model, std::span<const float> pushed) {
    ASSERT_EQ(pushes.count(t), 0u) << "one push per table in one step";
    pushes[t] = Pushed{
        {ids.begin(), ids.end()}, {model.begin(), model.end()}, {pushed.begin(), pushed.end()}};
  });
  ASSERT_TRUE((*trainer)->Train().ok());
  EXPECT_EQ((*trainer)->summary().steps, 1u);
  ASSERT_EQ(pushes.size(), 3u);

  // The model gradient, recomputed with a backend of our own on the same batch and the
  // rows the initializer gives.
  auto reader = Reader::Open(cfg.data(), {train, 0, 1, false});
  ASSERT_TRUE(reader.ok());
  Batch batch;
  ASSERT_TRUE(*(*reader)->NextBatch(&batch));
  ASSERT_EQ(batch.size, 4u);
  model::InputBuilder builder({{0}, {1, 2}, {}}, {4, 4, 4});
  model::ModelInput input;
  ASSERT_TRUE(builder.Build(batch, &input).ok());
  std::vector<std::vector<float>> rows(3);
  for (int t = 0; t < 3; ++t) {
    RowInitializer init(cfg.tables(t).initializer(), cfg.tables(t).seed());
    const auto ids = builder.unique_ids(t);
    rows[t].resize(ids.size() * 4);
    for (size_t i = 0; i < ids.size(); ++i) init.Fill(ids[i], &rows[t][i * 4], 4);
    input.tables[t].data = rows[t].data();
  }
  auto backend = model::CreateBackend("cpu", cfg.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(backend.ok());
  ASSERT_TRUE((*backend)->TrainStep(input, batch.labels).ok());

  for (int t = 0; t < 3; ++t) {
    SCOPED_TRACE(cfg.tables(t).name());
    const Pushed& p = pushes[t];
    const auto ids = builder.unique_ids(t);
    ASSERT_EQ(p.ids, std::vector<uint64_t>(ids.begin(), ids.end()));
    const auto& counts = kCounts.at(cfg.tables(t).name());
    ASSERT_EQ(p.ids.size(), counts.size()) << "exactly the batch's IDs are pushed";
    const auto grad = (*backend)->table_grad(t);
    std::vector<float> step(p.pushed.size());  // what SGD must apply
    for (size_t i = 0; i < p.ids.size(); ++i) {
      const float n = static_cast<float>(counts.at(p.ids[i]));
      for (int k = 0; k < 4; ++k) {
        const size_t e = i * 4 + k;
        EXPECT_EQ(p.model[e], grad[e]) << "model gradient of id " << p.ids[i];
        step[e] = grad[e] + lambda * rows[t][e] / n;
        const float expect = sync ? grad[e] * static_cast<float>(batch.size) : step[e];
        EXPECT_FLOAT_EQ(p.pushed[e], expect) << "id " << p.ids[i] << " coordinate " << k;
        if (lambda == 0.0f && !sync) {
          EXPECT_EQ(p.pushed[e], grad[e]) << "no MBA term when lambda = 0";
        }
      }
    }
    // SGD applied exactly the step to exactly these rows.
    TablePull after = PullOne(*client, t, p.ids, wire::EVAL);
    for (size_t e = 0; e < p.pushed.size(); ++e)
      EXPECT_FLOAT_EQ(after.values[e], rows[t][e] - 0.5f * step[e]) << "coordinate " << e;
    for (size_t i = 0; i < p.ids.size(); ++i)
      EXPECT_EQ(after.counts[i], counts.at(p.ids[i])) << "n_j on the server";
    // Rows outside the batch: untouched, bit for bit.
    TablePull outside = PullOne(*client, t, kOutside, wire::EVAL);
    EXPECT_EQ(outside.values, outside_before[t].values);
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(LambdaModeAndStep, MbaTest,
                         ::testing::Combine(::testing::Values(0.0f, 0.25f),
                                            ::testing::Values("PREPASS", "ONLINE"),
                                            ::testing::Values("SYNC", "ASYNC")));

TEST(MbaTermTest, AddsLambdaWOverNToTheGivenRowsOnly) {
  const std::vector<float> rows = {1, 2, -3, 4};
  const std::vector<uint32_t> counts = {4, 0};  // 0 is taken as 1
  std::vector<float> grads = {0.5f, 0.5f, 0.5f, 0.5f};
  AddMbaTerm(0.2f, 2, rows, counts, grads);
  EXPECT_FLOAT_EQ(grads[0], 0.5f + 0.2f * 1 / 4);
  EXPECT_FLOAT_EQ(grads[1], 0.5f + 0.2f * 2 / 4);
  EXPECT_FLOAT_EQ(grads[2], 0.5f + 0.2f * -3);
  EXPECT_FLOAT_EQ(grads[3], 0.5f + 0.2f * 4);
  std::vector<float> same = {0.5f, 0.5f, 0.5f, 0.5f};
  AddMbaTerm(0.0f, 2, rows, counts, same);
  EXPECT_EQ(same, std::vector<float>(4, 0.5f));
}

}  // namespace
}  // namespace din
