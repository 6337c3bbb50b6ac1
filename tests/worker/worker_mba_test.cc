// Mini-batch aware regularization end to end in one process: one worker (SoloCollective),
// one server on loopback, SGD. MbaTest: one training step on a hand-built batch; the test
// recomputes the model gradient with its own backend, n_j by hand and the rows from the
// initializer, and checks the pushed gradient, the rows after the step, and that rows
// of IDs outside the batch did not move. MbaCountsTest: four steps of two samples, where
// dataset-wide, running and batch-local counts differ: every push's MBA term uses the
// mode's n_j, and the first push's model gradient matches central differences of an
// independent forward pass.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/reader.h"
#include "common/data/schema.h"
#include "common/optim/row_initializer.h"
#include "tests/testing/local_cluster.h"
#include "tests/worker/model/din_reference.h"
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

// ---- Counts with provenance: batches of 2 over four steps ----------------------------
//
// Each ID's dataset-wide count, its running count (samples containing it so far,
// including the current batch) and its count within the current batch differ at some
// step, so a push that uses the wrong one is caught. The model part of the first step's
// push is compared with a gradient the test computes itself: central differences of the
// loss of the independent forward pass (tests/worker/model/din_reference.h).

// label user item cate hist_items hist_cates; two samples per step, in file order.
constexpr char kStepData[] =
    "1\t1\t100\t10\t101\t10\n"         // step 1
    "0\t2\t101\t10\t100,102\t10,11\n"  //
    "1\t1\t102\t11\t100\t10\n"         // step 2
    "0\t3\t103\t12\t\t\n"              //
    "1\t2\t100\t10\t103\t12\n"         // step 3
    "0\t1\t101\t10\t100\t10\n"         //
    "1\t3\t102\t11\t100,101\t10,10\n"  // step 4
    "0\t2\t100\t10\t\t\n";             //
constexpr int kBatch = 2;
constexpr float kLambda = 0.25f, kLr = 0.5f;
const char* const kTableNames[3] = {"user", "item", "cate"};

// The test's own reading of kStepData: per sample and table, the IDs it contains.
std::vector<std::array<std::set<uint64_t>, 3>> SampleIds() {
  std::vector<std::array<std::set<uint64_t>, 3>> out;
  std::istringstream lines(kStepData);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> f;
    std::stringstream cols(line);
    std::string col;
    while (std::getline(cols, col, '\t')) f.push_back(col);
    f.resize(6);
    std::array<std::set<uint64_t>, 3> ids;
    ids[0].insert(std::stoull(f[1]));
    ids[1].insert(std::stoull(f[2]));
    ids[2].insert(std::stoull(f[3]));
    for (int t : {1, 2}) {
      std::stringstream list(f[t + 3]);
      std::string id;
      while (std::getline(list, id, ','))
        if (!id.empty()) ids[t].insert(std::stoull(id));
    }
    out.push_back(ids);
  }
  return out;
}

// n_j of the samples [0, end) or [begin, end).
std::map<uint64_t, uint32_t> CountIds(const std::vector<std::array<std::set<uint64_t>, 3>>& s,
                                      int t, size_t begin, size_t end) {
  std::map<uint64_t, uint32_t> n;
  for (size_t i = begin; i < end; ++i)
    for (uint64_t id : s[i][t]) ++n[id];
  return n;
}

std::string StepConfig(const std::string& train, const char* mode) {
  std::string tables;
  for (const char* name : kTableNames)
    tables += std::string("tables { name: \"") + name +
              "\" dim: 4 shards: 2 initializer { kind: NORMAL stddev: 0.3 } "
              "optimizer { sgd { learning_rate: 0.5 } } mba_lambda: 0.25 }\n";
  return tables +
         "ps { request_timeout_ms: 10000 }\n"
         "model { attention_hidden: [8] top_hidden: [8] }\n"
         "data { batch_size: 2 shuffle_buffer: 0 partitions: 1 train_path: \"" +
         train +
         "\" }\n"
         "trainer { epochs: 1 backend: \"cpu\" staleness: 0 sparse_step: ASYNC mba_mode: " +
         mode + " }\n";
}

// The reference's layers from a backend's parameter buffer (read by tensor name).
model::test::reference::Weights ReferenceWeights(const model::ModelLayout& lay,
                                                 std::span<const float> params) {
  model::test::reference::Weights w;
  auto read = [&](const std::string& prefix, const std::vector<model::LayerSpec>& specs,
                  std::vector<model::test::reference::Layer>* out) {
    for (size_t i = 0; i < specs.size(); ++i) {
      const model::LayerSpec& s = specs[i];
      model::test::reference::Layer l;
      l.in = s.in;
      l.out = s.out;
      const std::string name = prefix + "." + std::to_string(i);
      auto get = [&](const std::string& tensor) {
        const model::ParamTensor* t = lay.FindTensor(tensor);
        CHECK(t != nullptr) << tensor;
        return std::vector<double>(params.begin() + t->offset,
                                   params.begin() + t->offset + t->rows * t->cols);
      };
      l.w = get(name + ".w");
      l.b = get(name + ".b");
      if (s.act == model::math::Act::kDice) l.alpha = get(name + ".alpha");
      out->push_back(l);
    }
  };
  read("att", lay.attention(), &w.attention);
  read("top", lay.top(), &w.top);
  return w;
}

class MbaCountsTest : public ::testing::TestWithParam<const char*> {};

TEST_P(MbaCountsTest, PushesUseTheModesCountsAtEveryStep) {
  const std::string mode = GetParam();
  const bool prepass = mode == "PREPASS";
  const std::string dir = ::testing::TempDir() + "/mba_counts_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  const std::string train = dir + "/train.tsv";
  std::ofstream(train) << kStepData;
  const auto cfg = MustParse(StepConfig(train, mode.c_str()));
  const auto samples = SampleIds();
  const size_t steps = samples.size() / kBatch;
  ASSERT_EQ(steps, 4u);

  LocalCluster cluster(cfg, 1, 2);
  auto client = cluster.Connect();
  struct Pushed {
    std::vector<uint64_t> ids;
    std::vector<float> model, pushed;
  };
  std::vector<std::map<int, Pushed>> pushes;  // per step, per table
  SoloCollective solo;
  auto trainer = Trainer::Create(cfg, client.get(), &solo, {});
  ASSERT_TRUE(trainer.ok()) << trainer.status().ToString();
  (*trainer)->set_push_observer([&](int t, std::span<const uint64_t> ids,
                                    std::span<const float> model, std::span<const float> pushed) {
    if (pushes.empty() || pushes.back().count(t)) pushes.emplace_back();
    pushes.back()[t] = Pushed{
        {ids.begin(), ids.end()}, {model.begin(), model.end()}, {pushed.begin(), pushed.end()}};
  });
  // The dense weights the first step starts from: the seeded initialisation.
  auto fresh = model::CreateBackend("cpu", cfg.model(), {{4}, {4, 4}, {}}, 1);
  ASSERT_TRUE(fresh.ok());
  const auto weights0 = ReferenceWeights((*fresh)->layout(), (*fresh)->params());
  ASSERT_TRUE((*trainer)->Train().ok());
  ASSERT_EQ(pushes.size(), steps);

  // Rows as the server holds them: the initializer, then every SGD step of the pushes.
  std::vector<std::map<uint64_t, std::vector<float>>> rows(3);
  auto row = [&](int t, uint64_t id) -> std::vector<float>& {
    auto it = rows[t].find(id);
    if (it == rows[t].end()) {
      std::vector<float> r(4);
      RowInitializer(cfg.tables(t).initializer(), cfg.tables(t).seed()).Fill(id, r.data(), 4);
      it = rows[t].emplace(id, r).first;
    }
    return it->second;
  };

  int distinguishing[2] = {0, 0};  // pushes where the expected n differs from batch-local,
                                   // and from the other mode's n
  for (size_t step = 0; step < steps; ++step) {
    const size_t lo = step * kBatch, hi = lo + kBatch;
    for (int t = 0; t < 3; ++t) {
      SCOPED_TRACE(std::string(kTableNames[t]) + ", step " + std::to_string(step + 1));
      const auto dataset = CountIds(samples, t, 0, samples.size());
      const auto running = CountIds(samples, t, 0, hi);
      const auto local = CountIds(samples, t, lo, hi);
      const auto& want_n = prepass ? dataset : running;
      const auto& other_n = prepass ? running : dataset;
      ASSERT_EQ(pushes[step].count(t), 1u);
      const Pushed& p = pushes[step].at(t);
      ASSERT_EQ(std::set<uint64_t>(p.ids.begin(), p.ids.end()).size(), local.size())
          << "exactly the batch's IDs are pushed";
      for (size_t i = 0; i < p.ids.size(); ++i) {
        const uint64_t id = p.ids[i];
        ASSERT_EQ(local.count(id), 1u) << "id " << id << " is not in the batch";
        const uint32_t n = want_n.at(id);
        distinguishing[0] += n != local.at(id);
        distinguishing[1] += n != other_n.at(id);
        std::vector<float>& w = row(t, id);
        for (int k = 0; k < 4; ++k) {
          const size_t e = i * 4 + k;
          // pushed = model + λ·w/n: the MBA term with this mode's n.
          EXPECT_NEAR(p.pushed[e] - p.model[e], kLambda * w[k] / static_cast<float>(n),
                      1e-6f + 1e-5f * std::abs(kLambda * w[k]))
              << "id " << id << " coordinate " << k << ": want n = " << n << " (batch-local "
              << local.at(id) << ")";
        }
      }
      for (size_t i = 0; i < p.ids.size(); ++i)
        for (int k = 0; k < 4; ++k) row(t, p.ids[i])[k] -= kLr * p.pushed[i * 4 + k];
    }
  }
  EXPECT_GT(distinguishing[0], 0) << "the data cannot tell batch-local counts apart";
  EXPECT_GT(distinguishing[1], 0) << "the data cannot tell PREPASS from ONLINE counts";

  // The server keeps this mode's n after the last step.
  for (int t = 0; t < 3; ++t) {
    const auto dataset = CountIds(samples, t, 0, samples.size());
    std::vector<uint64_t> ids;
    for (const auto& [id, n] : dataset) ids.push_back(id);
    TablePull after = PullOne(*client, t, ids, wire::EVAL);
    for (size_t i = 0; i < ids.size(); ++i)
      EXPECT_EQ(after.counts[i], dataset.at(ids[i])) << kTableNames[t] << " id " << ids[i];
  }

  // The first step's model gradient against central differences of the independent
  // forward pass's loss, on the initial rows and dense weights.
  namespace ref = model::test::reference;
  std::vector<ref::Sample> batch;
  std::vector<double> labels;
  std::map<uint64_t, std::vector<float>> init[3];
  auto init_row = [&](int t, uint64_t id) {
    if (!init[t].count(id)) {
      std::vector<float> r(4);
      RowInitializer(cfg.tables(t).initializer(), cfg.tables(t).seed()).Fill(id, r.data(), 4);
      init[t][id] = r;
    }
    return std::vector<double>(init[t][id].begin(), init[t][id].end());
  };
  // The two samples of step 1, as written in kStepData.
  struct Raw {
    uint64_t user, item, cate;
    std::vector<uint64_t> hist_items, hist_cates;
    double label;
  };
  const Raw raw[2] = {{1, 100, 10, {101}, {10}, 1}, {2, 101, 10, {100, 102}, {10, 11}, 0}};
  // Perturbations go through this table of current values.
  std::map<std::pair<int, uint64_t>, std::vector<double>> vals;
  for (const Raw& r : raw) {
    vals[{0, r.user}] = init_row(0, r.user);
    vals[{1, r.item}] = init_row(1, r.item);
    vals[{2, r.cate}] = init_row(2, r.cate);
    for (uint64_t id : r.hist_items) vals[{1, id}] = init_row(1, id);
    for (uint64_t id : r.hist_cates) vals[{2, id}] = init_row(2, id);
  }
  auto loss = [&] {
    std::vector<ref::Sample> b;
    std::vector<double> y;
    for (const Raw& r : raw) {
      ref::Sample s;
      s.user = {ref::Bag{4, {vals[{0, r.user}]}}};
      s.candidate_item = vals[{1, r.item}];
      const auto& c = vals[{2, r.cate}];
      s.candidate_item.insert(s.candidate_item.end(), c.begin(), c.end());
      for (size_t j = 0; j < r.hist_items.size(); ++j) {
        std::vector<double> e = vals[{1, r.hist_items[j]}];
        const auto& hc = vals[{2, r.hist_cates[j]}];
        e.insert(e.end(), hc.begin(), hc.end());
        s.history.push_back(e);
      }
      b.push_back(s);
      y.push_back(r.label);
    }
    return ref::MeanLogLoss(ref::Logits(b, weights0, {}), y);
  };
  int checked = 0;
  for (int t = 0; t < 3; ++t) {
    const Pushed& p = pushes[0].at(t);
    for (size_t i = 0; i < p.ids.size(); ++i)
      for (int k = 0; k < 4; ++k) {
        std::vector<double>& v = vals.at({t, p.ids[i]});
        const double h = 1e-5, old = v[k];
        v[k] = old + h;
        const double up = loss();
        v[k] = old - h;
        const double down = loss();
        v[k] = old;
        const double numeric = (up - down) / (2 * h);
        EXPECT_NEAR(p.model[i * 4 + k], numeric, 2e-5 + 1e-3 * std::abs(numeric))
            << kTableNames[t] << " id " << p.ids[i] << " coordinate " << k;
        ++checked;
      }
  }
  EXPECT_EQ(checked, 4 * (2 + 3 + 2));  // users 1, 2; items 100-102; cates 10, 11
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Modes, MbaCountsTest, ::testing::Values("PREPASS", "ONLINE"));

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
