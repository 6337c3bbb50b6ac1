// Whole-model checks: finite-difference gradients of every dense parameter and every
// unique embedding row (double-precision reference), masking, pooling identities, the
// float CPU backend against the reference, initialisation, the factory and the input
// builder.
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/batch.h"
#include "common/proto/model_config.pb.h"
#include "tests/worker/model/model_test_util.h"
#include "worker/model/backend.h"
#include "worker/model/dense_adam.h"

namespace din::model {
namespace {

using test::CentralDiff;
using test::ExpectGradClose;
using test::ExpectRunningNear;
using test::ExpectTensorsNear;
using test::ExpectVectorsNear;
using test::MakeProblem;
using test::Problem;
using test::ProblemOptions;
using test::ReferenceModel;

struct GradCase {
  std::string name;
  config::ModelConfig::Pooling pooling;
  config::ModelConfig::Activation activation;
  bool softmax;
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class ModelGradTest : public ::testing::TestWithParam<GradCase> {};

// Every dense parameter and every entry of every unique embedding row against central
// differences of the training loss (Dice on batch statistics).
TEST_P(ModelGradTest, MatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  Problem pb = MakeProblem(ProblemOptions{});
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ReferenceModel ref(pb);
  std::vector<double> grads;
  std::vector<std::vector<double>> table_grads;
  ref.Gradients(pb, &grads, &table_grads);
  auto loss = [&] { return ref.Loss(pb); };
  const double h = c.activation == config::ModelConfig::DICE ? 1e-5 : 1e-6;

  std::vector<double> num(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) num[i] = CentralDiff(ref.params, i, h, loss);
  ExpectGradClose(grads, num, 1e-8, 1e-5, c.name + " dense");
  double dense_norm = 0;
  for (double g : grads) dense_norm += std::abs(g);
  EXPECT_GT(dense_norm, 1e-3);

  for (size_t t = 0; t < pb.tables_d.size(); ++t) {
    std::vector<double> num_t(pb.tables_d[t].size());
    for (size_t i = 0; i < num_t.size(); ++i) num_t[i] = CentralDiff(pb.tables_d[t], i, h, loss);
    ExpectGradClose(table_grads[t], num_t, 1e-8, 1e-5, c.name + " table " + std::to_string(t));
  }
  // Item row 0 is sample 0's candidate and twice in its history: a non-zero summed
  // gradient that the check above covered.
  EXPECT_GT(std::abs(table_grads[0][0]) + std::abs(table_grads[0][1]), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    AllPoolings, ModelGradTest,
    ::testing::Values(
        GradCase{"AttentionDice", config::ModelConfig::ATTENTION, config::ModelConfig::DICE, false},
        GradCase{"AttentionDiceSoftmax", config::ModelConfig::ATTENTION, config::ModelConfig::DICE,
                 true},
        GradCase{"AttentionPRelu", config::ModelConfig::ATTENTION, config::ModelConfig::PRELU,
                 false},
        GradCase{"AttentionSigmoid", config::ModelConfig::ATTENTION, config::ModelConfig::SIGMOID,
                 false},
        GradCase{"SumDice", config::ModelConfig::SUM, config::ModelConfig::DICE, false},
        GradCase{"MeanDice", config::ModelConfig::MEAN, config::ModelConfig::DICE, false},
        GradCase{"MeanRelu", config::ModelConfig::MEAN, config::ModelConfig::RELU, false}),
    [](const auto& info) { return info.param.name; });

// An ID occurring several times in one sample and across fields gets one gradient: the
// sum over its occurrences. Checked by splitting the occurrences onto separate rows.
TEST(ModelTest, UniqueRowGradientIsSumOverOccurrences) {
  Problem pb = MakeProblem(ProblemOptions{});
  ReferenceModel ref(pb);
  std::vector<double> grads;
  std::vector<std::vector<double>> shared;
  ref.Gradients(pb, &grads, &shared);
  // Give every occurrence of item row 0 its own copy of the row.
  const int d = 3;
  int copies = 0;
  auto split = [&](FieldRows& f) {
    for (uint32_t& r : f.rows)
      if (r == 0) {
        r = pb.input.tables[0].rows++;
        for (int k = 0; k < d; ++k) pb.tables_f[0].push_back(pb.tables_f[0][k]);
        ++copies;
      }
  };
  split(pb.input.candidate_fields[0]);
  split(pb.input.behavior_fields[0]);
  pb.SyncFromFloat();
  ASSERT_GE(copies, 3);
  std::vector<std::vector<double>> separate;
  ref.Gradients(pb, &grads, &separate);
  for (int k = 0; k < d; ++k) {
    double sum = 0;
    for (uint32_t r = pb.input.tables[0].rows - copies; r < pb.input.tables[0].rows; ++r)
      sum += separate[0][r * d + k];
    EXPECT_NEAR(sum, shared[0][k], 1e-12);
  }
}

// Behaviours beyond max_history (the oldest) and rows no kept occurrence uses are
// masked: their values change neither the output nor any gradient, and they get none.
TEST(ModelTest, MaskedPositionsChangeNothing) {
  for (auto pooling :
       {config::ModelConfig::ATTENTION, config::ModelConfig::SUM, config::ModelConfig::MEAN}) {
    Problem pb = MakeProblem(ProblemOptions{});
    pb.config.set_pooling(pooling);
    // Sample 0 has 6 behaviours, max_history 4: its two oldest are dropped. Point them
    // at fresh rows of their own.
    for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
      FieldRows& hist = pb.input.behavior_fields[f];
      const int t = hist.table, d = pb.input.tables[t].dim;
      for (int j = 0; j < 2; ++j) {
        hist.rows[j] = pb.input.tables[t].rows++;
        for (int k = 0; k < d; ++k) pb.tables_f[t].push_back(0.5f);
      }
    }
    pb.SyncFromFloat();
    ReferenceModel ref(pb);
    std::vector<double> g1, g2;
    std::vector<std::vector<double>> t1, t2;
    ref.Gradients(pb, &g1, &t1);
    const std::vector<double> logits1(ref.engine.logits().begin(), ref.engine.logits().end());
    for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
      const int t = pb.input.behavior_fields[f].table;
      for (int j = 0; j < 2; ++j) {
        const uint32_t row = pb.input.behavior_fields[f].rows[j];
        const int d = pb.input.tables[t].dim;
        for (int k = 0; k < d; ++k) pb.tables_f[t][row * d + k] = -7.0f + k;
        for (int k = 0; k < d; ++k) EXPECT_EQ(t1[t][row * d + k], 0.0);
      }
    }
    pb.SyncFromFloat();
    ref.Gradients(pb, &g2, &t2);
    const std::vector<double> logits2(ref.engine.logits().begin(), ref.engine.logits().end());
    EXPECT_EQ(logits1, logits2);
    EXPECT_EQ(g1, g2);
    EXPECT_EQ(t1, t2);
  }
}

// In evaluation each sample's logit is independent of the other samples and of their
// history lengths: a sample alone gives the same logit as inside the batch.
TEST(ModelTest, EvalLogitDoesNotDependOnOtherSamples) {
  Problem pb = MakeProblem(ProblemOptions{});
  auto backend = CreateBackend("cpu", pb.config, pb.dims).value();
  // Move the running statistics away from their initial values first.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(backend->TrainStep(pb.input, pb.labels).ok());
  std::vector<float> all(pb.input.batch_size);
  ASSERT_TRUE(backend->Predict(pb.input, all).ok());
  for (size_t b = 0; b < pb.input.batch_size; ++b) {
    ModelInput one = pb.input;
    one.batch_size = 1;
    for (auto* group :
         {&one.user_fields, &one.candidate_fields, &one.behavior_fields, &one.context_fields})
      for (FieldRows& f : *group) {
        const uint32_t lo = f.offsets[b], hi = f.offsets[b + 1];
        f.rows = std::vector<uint32_t>(f.rows.begin() + lo, f.rows.begin() + hi);
        f.offsets = {0, hi - lo};
      }
    float logit = 0;
    ASSERT_TRUE(backend->Predict(one, std::span<float>(&logit, 1)).ok());
    EXPECT_TRUE(std::isfinite(logit));
    EXPECT_NEAR(logit, all[b], 1e-5f * std::max(1.0f, std::abs(all[b]))) << "sample " << b;
    float again = 0;
    ASSERT_TRUE(backend->Predict(one, std::span<float>(&again, 1)).ok());
    EXPECT_EQ(logit, again);
  }
}

// SUM pooling is attention pooling with every weight 1: an activation unit whose output
// layer is w = 0, b = 1 gives the same logits, loss and gradients.
TEST(ModelTest, SumPoolingEqualsAttentionWithUnitWeights) {
  Problem att_pb = MakeProblem(ProblemOptions{});
  Problem sum_pb = att_pb;
  sum_pb.SyncFromFloat();
  att_pb.SyncFromFloat();
  sum_pb.config.set_pooling(config::ModelConfig::SUM);
  ReferenceModel att(att_pb), sum(sum_pb);
  const ParamTensor* w = att.layout.FindTensor("att.2.w");
  const ParamTensor* b = att.layout.FindTensor("att.2.b");
  ASSERT_NE(w, nullptr);
  ASSERT_NE(b, nullptr);
  for (int i = 0; i < w->rows * w->cols; ++i) att.params[w->offset + i] = 0;
  att.params[b->offset] = 1;
  for (const ParamTensor& t : sum.layout.tensors()) {
    const ParamTensor* a = att.layout.FindTensor(t.name);
    ASSERT_NE(a, nullptr) << t.name;
    for (int i = 0; i < t.rows * t.cols; ++i) sum.params[t.offset + i] = att.params[a->offset + i];
  }
  std::vector<double> ga, gs;
  std::vector<std::vector<double>> ta, ts;
  att.Gradients(att_pb, &ga, &ta);
  sum.Gradients(sum_pb, &gs, &ts);
  for (double wj : att.engine.pooling_weights()) EXPECT_EQ(wj, 1.0);
  EXPECT_NEAR(att.Loss(att_pb), sum.Loss(sum_pb), 1e-14);
  for (size_t i = 0; i < att.engine.logits().size(); ++i)
    EXPECT_NEAR(att.engine.logits()[i], sum.engine.logits()[i], 1e-13);
  for (const ParamTensor& t : sum.layout.tensors()) {
    const ParamTensor* a = att.layout.FindTensor(t.name);
    for (int i = 0; i < t.rows * t.cols; ++i)
      EXPECT_NEAR(ga[a->offset + i], gs[t.offset + i], 1e-13) << t.name;
  }
  for (size_t t = 0; t < ta.size(); ++t)
    for (size_t i = 0; i < ta[t].size(); ++i) EXPECT_NEAR(ta[t][i], ts[t][i], 1e-13);
}

// The float backend computes what the double reference computes.
TEST(CpuBackendTest, MatchesDoubleReference) {
  for (auto pooling : {config::ModelConfig::ATTENTION, config::ModelConfig::MEAN}) {
    ProblemOptions o;
    o.batch = 40;
    o.max_history = 10;
    o.longest_list = 14;
    o.item_rows = 30;
    Problem pb = MakeProblem(o);
    pb.config.set_pooling(pooling);
    ReferenceModel ref(pb);
    auto backend = CreateBackend("cpu", pb.config, pb.dims).value();
    EXPECT_EQ(backend->name(), "cpu");
    ASSERT_EQ(backend->params().size(), ref.params.size());
    for (size_t i = 0; i < ref.params.size(); ++i) {
      backend->params()[i] = static_cast<float>(ref.params[i]);
      ref.params[i] = backend->params()[i];
    }
    std::vector<double> grads;
    std::vector<std::vector<double>> tg;
    ref.Gradients(pb, &grads, &tg);
    const double ref_loss = ref.Loss(pb);
    auto loss = backend->TrainStep(pb.input, pb.labels);
    ASSERT_TRUE(loss.ok()) << loss.status().ToString();
    EXPECT_NEAR(*loss, ref_loss, 1e-5 * std::abs(ref_loss));
    ExpectVectorsNear<float, double>(backend->logits(), ref.engine.logits(), 1e-5, "logits");
    ExpectTensorsNear<float, double>(backend->grads(), grads, backend->layout(), 1e-4, "grads");
    for (int t = 0; t < backend->num_table_grads(); ++t)
      ExpectVectorsNear<float, double>(backend->table_grad(t), tg[t], 1e-4,
                                       "table " + std::to_string(t));
  }
}

// Large enough for the row-chunk parallel path: two threads give what one thread and
// the double reference give.
TEST(CpuBackendTest, TwoThreadsMatchOneThread) {
  ProblemOptions o;
  o.batch = 400;
  o.max_history = 30;
  o.longest_list = 40;
  o.item_rows = 300;
  Problem pb = MakeProblem(o);
  pb.config.clear_top_hidden();
  pb.config.add_top_hidden(120);
  pb.config.add_top_hidden(90);
  pb.config.clear_attention_hidden();
  pb.config.add_attention_hidden(64);
  pb.config.add_attention_hidden(32);
  auto one = CreateBackend("cpu", pb.config, pb.dims, 1).value();
  auto two = CreateBackend("cpu", pb.config, pb.dims, 2).value();
  for (int step = 0; step < 2; ++step) {
    const float l1 = one->TrainStep(pb.input, pb.labels).value();
    const float l2 = two->TrainStep(pb.input, pb.labels).value();
    EXPECT_NEAR(l1, l2, 1e-5f * l1);
    ExpectTensorsNear<float, float>(two->grads(), one->grads(), one->layout(), 1e-4, "grads");
    ExpectRunningNear<float, float>(two->running_stats(), one->running_stats(), one->layout(), 1e-5,
                                    "stats");
    for (int t = 0; t < one->num_table_grads(); ++t)
      ExpectVectorsNear<float, float>(two->table_grad(t), one->table_grad(t), 1e-4, "table");
  }
  std::vector<float> e1(pb.input.batch_size), e2(pb.input.batch_size);
  ASSERT_TRUE(one->Predict(pb.input, e1).ok());
  ASSERT_TRUE(two->Predict(pb.input, e2).ok());
  ExpectVectorsNear<float, float>(e2, e1, 1e-5, "eval logits");
  // The reference (double) in the chunked path, against finite differences on a few
  // parameters of the first layers.
  ReferenceModel ref(pb);
  std::vector<double> grads;
  std::vector<std::vector<double>> tg;
  ref.Gradients(pb, &grads, &tg);
  auto loss = [&] { return ref.Loss(pb); };
  for (const char* name : {"att.0.w", "att.0.alpha", "top.0.w", "top.1.alpha"}) {
    const ParamTensor* t = ref.layout.FindTensor(name);
    ASSERT_NE(t, nullptr);
    for (size_t i = t->offset; i < t->offset + 5; ++i) {
      const double num = CentralDiff(ref.params, i, 1e-5, loss);
      EXPECT_NEAR(grads[i], num, 1e-8 + 1e-5 * std::abs(num)) << name;
    }
  }
}

TEST(CpuBackendTest, TrainStepAdvancesRunningStatsAndPredictDoesNot) {
  Problem pb = MakeProblem(ProblemOptions{});
  auto backend = CreateBackend("cpu", pb.config, pb.dims).value();
  ASSERT_GT(backend->running_stats().size(), 0u);
  const std::vector<float> before(backend->running_stats().begin(), backend->running_stats().end());
  ASSERT_TRUE(backend->TrainStep(pb.input, pb.labels).ok());
  const std::vector<float> after(backend->running_stats().begin(), backend->running_stats().end());
  EXPECT_NE(before, after);
  std::vector<float> logits(pb.input.batch_size);
  ASSERT_TRUE(backend->Predict(pb.input, logits).ok());
  EXPECT_EQ(after,
            std::vector<float>(backend->running_stats().begin(), backend->running_stats().end()));
  // Changing the running statistics changes the evaluation output.
  for (float& v : backend->running_stats()) v *= 1.5f;
  std::vector<float> logits2(pb.input.batch_size);
  ASSERT_TRUE(backend->Predict(pb.input, logits2).ok());
  EXPECT_NE(logits, logits2);
}

// Reusing buffers across batches of different shapes gives the same results as a fresh
// backend.
TEST(CpuBackendTest, BuffersReusedAcrossBatchShapes) {
  ProblemOptions big;
  big.batch = 30;
  big.longest_list = 12;
  big.max_history = 8;
  Problem a = MakeProblem(big);
  ProblemOptions small_o = big;
  small_o.batch = 5;
  small_o.seed = 3;
  Problem b = MakeProblem(small_o);
  auto reused = CreateBackend("cpu", a.config, a.dims).value();
  auto fresh = CreateBackend("cpu", b.config, b.dims).value();
  ASSERT_TRUE(reused->TrainStep(a.input, a.labels).ok());
  std::copy(fresh->running_stats().begin(), fresh->running_stats().end(),
            reused->running_stats().begin());
  const float l1 = reused->TrainStep(b.input, b.labels).value();
  const float l2 = fresh->TrainStep(b.input, b.labels).value();
  EXPECT_EQ(l1, l2);
  EXPECT_TRUE(std::equal(reused->grads().begin(), reused->grads().end(), fresh->grads().begin()));
  for (int t = 0; t < fresh->num_table_grads(); ++t)
    EXPECT_TRUE(std::ranges::equal(reused->table_grad(t), fresh->table_grad(t)));
}

TEST(CpuBackendTest, RejectsBadInput) {
  Problem pb = MakeProblem(ProblemOptions{});
  auto backend = CreateBackend("cpu", pb.config, pb.dims).value();
  ModelInput bad = pb.input;
  bad.behavior_fields[0].rows[0] = 999;
  EXPECT_FALSE(backend->TrainStep(bad, pb.labels).ok());
  bad = pb.input;
  bad.candidate_fields[0].offsets[2] = 3;
  EXPECT_FALSE(backend->TrainStep(bad, pb.labels).ok());
  bad = pb.input;
  bad.tables[2].dim = 3;
  EXPECT_FALSE(backend->TrainStep(bad, pb.labels).ok());
  std::vector<float> few(2);
  EXPECT_FALSE(backend->TrainStep(pb.input, few).ok());
}

TEST(InitTest, SeededAndIdentical) {
  Problem pb = MakeProblem(ProblemOptions{});
  auto a = CreateBackend("cpu", pb.config, pb.dims).value();
  auto b = CreateBackend("cpu", pb.config, pb.dims).value();
  EXPECT_TRUE(std::ranges::equal(a->params(), b->params()));
  pb.config.set_dense_seed(pb.config.dense_seed() + 1);
  auto c = CreateBackend("cpu", pb.config, pb.dims).value();
  EXPECT_FALSE(std::ranges::equal(a->params(), c->params()));
  // Weights are Glorot-uniform: bounded and not all equal.
  const ParamTensor* w = a->layout().FindTensor("top.0.w");
  ASSERT_NE(w, nullptr);
  const float limit = std::sqrt(6.0f / (w->rows + w->cols));
  float lo = 1, hi = -1;
  for (int i = 0; i < w->rows * w->cols; ++i) {
    lo = std::min(lo, a->params()[w->offset + i]);
    hi = std::max(hi, a->params()[w->offset + i]);
  }
  EXPECT_GE(lo, -limit);
  EXPECT_LE(hi, limit);
  EXPECT_LT(lo, -limit / 2);
  EXPECT_GT(hi, limit / 2);
}

TEST(FactoryTest, BackendSelection) {
  Problem pb = MakeProblem(ProblemOptions{});
  auto cpu = CreateBackend("cpu", pb.config, pb.dims);
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->name(), "cpu");
  auto bogus = CreateBackend("tpu", pb.config, pb.dims);
  EXPECT_FALSE(bogus.ok());
  auto auto_backend = CreateBackend("auto", pb.config, pb.dims);
  ASSERT_TRUE(auto_backend.ok());
  auto cuda = CreateBackend("cuda", pb.config, pb.dims);
  if (CudaDeviceCount() == 0) {
    EXPECT_EQ((*auto_backend)->name(), "cpu");
    ASSERT_FALSE(cuda.ok());
    EXPECT_FALSE(cuda.status().message().empty());
  } else {
    EXPECT_EQ((*auto_backend)->name(), "cuda");
    EXPECT_TRUE(cuda.ok());
  }
  config::ModelConfig bad = pb.config;
  bad.add_item_fields(7);
  EXPECT_FALSE(CreateBackend("cpu", bad, pb.dims).ok());
}

TEST(InputBuilderTest, DedupsPerTableAcrossFields) {
  Batch batch;
  batch.size = 2;
  batch.labels = {1, 0};
  batch.users = {10, 11};
  batch.candidate_fields.resize(2);
  batch.behavior_fields.resize(2);
  batch.user_fields.resize(1);
  auto push = [](IdColumn& c, std::vector<uint64_t> ids) {
    c.ids.insert(c.ids.end(), ids.begin(), ids.end());
    c.offsets.push_back(static_cast<uint32_t>(c.ids.size()));
  };
  push(batch.candidate_fields[0], {100});
  push(batch.candidate_fields[0], {200});
  push(batch.candidate_fields[1], {7});
  push(batch.candidate_fields[1], {7});
  push(batch.behavior_fields[0], {200, 100, 100});
  push(batch.behavior_fields[0], {});
  push(batch.behavior_fields[1], {7, 8, 7});
  push(batch.behavior_fields[1], {});
  push(batch.user_fields[0], {10});
  push(batch.user_fields[0], {11, 10});
  InputBuilder builder(FieldTables{{2}, {0, 1}, {}}, {4, 4, 2});
  ModelInput input;
  ASSERT_TRUE(builder.Build(batch, &input).ok());
  EXPECT_EQ(std::vector<uint64_t>(builder.unique_ids(0).begin(), builder.unique_ids(0).end()),
            (std::vector<uint64_t>{100, 200}));
  EXPECT_EQ(builder.unique_ids(1).size(), 2u);
  EXPECT_EQ(builder.unique_ids(2).size(), 2u);
  EXPECT_EQ(input.behavior_fields[0].rows, (std::vector<uint32_t>{1, 0, 0}));
  EXPECT_EQ(input.candidate_fields[0].rows, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(input.user_fields[0].offsets, (std::vector<uint32_t>{0, 1, 3}));
  EXPECT_EQ(input.tables[0].rows, 2u);
  EXPECT_EQ(input.tables[2].dim, 2);
  // Rebuilding reuses the maps and starts from scratch.
  ASSERT_TRUE(builder.Build(batch, &input).ok());
  EXPECT_EQ(builder.unique_ids(0).size(), 2u);
  Batch wrong = batch;
  wrong.context_fields.resize(1);
  EXPECT_FALSE(builder.Build(wrong, &input).ok());
}

TEST(DenseAdamTest, FirstStepsMatchFormula) {
  config::DenseAdamConfig cfg;
  cfg.set_learning_rate(0.1f);
  DenseAdam adam(cfg, 2);
  std::vector<float> p = {1.0f, -1.0f}, g = {0.5f, -2.0f};
  adam.Step(p, g);
  // Step 1: m̂ = g, v̂ = g², update = lr · g / (|g| + ε) = ±lr.
  EXPECT_NEAR(p[0], 0.9f, 1e-6f);
  EXPECT_NEAR(p[1], -0.9f, 1e-6f);
  adam.Step(p, g);
  EXPECT_NEAR(p[0], 0.8f, 1e-5f);
  EXPECT_EQ(adam.step(), 2);
}

}  // namespace
}  // namespace din::model
