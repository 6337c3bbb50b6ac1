// The CUDA backend against the CPU backend (itself checked against finite differences
// in double precision) on the same inputs and parameters. Every test is skipped when no
// CUDA device is usable; without CUDA support in the build, CreateBackend("cuda") must
// fail with a clear error instead.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/model_config.pb.h"
#include "tests/worker/model/model_test_util.h"
#include "worker/model/backend.h"

namespace din::model {
namespace {

using test::ExpectVectorsNear;
using test::MakeProblem;
using test::Problem;
using test::ProblemOptions;

#define DIN_REQUIRE_CUDA()                                                    \
  do {                                                                        \
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device here"; \
  } while (0)

struct Pair {
  std::unique_ptr<ModelBackend> cpu, cuda;
};

Pair MakePair(const Problem& pb) {
  Pair p;
  p.cpu = CreateBackend("cpu", pb.config, pb.dims).value();
  auto cuda = CreateBackend("cuda", pb.config, pb.dims);
  EXPECT_TRUE(cuda.ok()) << cuda.status().ToString();
  if (cuda.ok()) p.cuda = std::move(cuda).value();
  return p;
}

// Trains both backends for a few steps on the same batch (the same dense update applied
// to both) and compares everything they return, at relative tolerance 1e-4.
void ExpectParity(Problem& pb, const std::string& what) {
  Pair p = MakePair(pb);
  ASSERT_NE(p.cuda, nullptr);
  EXPECT_EQ(p.cuda->name(), "cuda");
  ASSERT_TRUE(std::ranges::equal(p.cpu->params(), p.cuda->params())) << "same seed, same init";
  for (int step = 0; step < 3; ++step) {
    const std::string at = what + " step " + std::to_string(step);
    auto lc = p.cpu->TrainStep(pb.input, pb.labels);
    auto lg = p.cuda->TrainStep(pb.input, pb.labels);
    ASSERT_TRUE(lc.ok()) << lc.status().ToString();
    ASSERT_TRUE(lg.ok()) << lg.status().ToString();
    EXPECT_NEAR(*lg, *lc, 1e-4 * std::max(1.0f, std::abs(*lc))) << at;
    ExpectVectorsNear<float, float>(p.cuda->logits(), p.cpu->logits(), 1e-4, at + " logits");
    ExpectVectorsNear<float, float>(p.cuda->grads(), p.cpu->grads(), 1e-4, at + " grads");
    ExpectVectorsNear<float, float>(p.cuda->running_stats(), p.cpu->running_stats(), 1e-4,
                                    at + " running stats");
    ASSERT_EQ(p.cuda->num_table_grads(), p.cpu->num_table_grads());
    for (int t = 0; t < p.cpu->num_table_grads(); ++t)
      ExpectVectorsNear<float, float>(p.cuda->table_grad(t), p.cpu->table_grad(t), 1e-4,
                                      at + " table " + std::to_string(t));
    // Same SGD step on both, so later steps run on moved parameters.
    for (size_t i = 0; i < p.cpu->params().size(); ++i) {
      p.cpu->params()[i] -= 0.5f * p.cpu->grads()[i];
      p.cuda->params()[i] = p.cpu->params()[i];
    }
    std::ranges::copy(p.cpu->running_stats(), p.cuda->running_stats().begin());
  }
  std::vector<float> ec(pb.input.batch_size), eg(pb.input.batch_size);
  ASSERT_TRUE(p.cpu->Predict(pb.input, ec).ok());
  ASSERT_TRUE(p.cuda->Predict(pb.input, eg).ok());
  ExpectVectorsNear<float, float>(eg, ec, 1e-4, what + " eval logits");
}

TEST(CudaBackendTest, NoDeviceIsAClearError) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  Problem pb = MakeProblem(ProblemOptions{});
  auto cuda = CreateBackend("cuda", pb.config, pb.dims);
  ASSERT_FALSE(cuda.ok());
  EXPECT_NE(cuda.status().message().find("CUDA"), std::string::npos) << cuda.status().ToString();
  EXPECT_EQ(CreateBackend("auto", pb.config, pb.dims).value()->name(), "cpu");
}

struct ParityCase {
  std::string name;
  config::ModelConfig::Pooling pooling;
  config::ModelConfig::Activation activation;
  bool softmax;
};
void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.name; }

class CudaParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(CudaParityTest, SmallProblemMatchesCpu) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  Problem pb = MakeProblem(ProblemOptions{});
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ExpectParity(pb, c.name);
}

// Larger than one reduction chunk (256 rows) so the chunked column sums are exercised.
TEST_P(CudaParityTest, LargeBatchMatchesCpu) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  ProblemOptions o;
  o.batch = 300;
  o.max_history = 20;
  o.longest_list = 30;
  o.item_rows = 500;
  o.cate_rows = 40;
  Problem pb = MakeProblem(o);
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ExpectParity(pb, c.name);
}

INSTANTIATE_TEST_SUITE_P(
    AllConfigs, CudaParityTest,
    ::testing::Values(
        ParityCase{"AttentionDice", config::ModelConfig::ATTENTION, config::ModelConfig::DICE,
                   false},
        ParityCase{"AttentionDiceSoftmax", config::ModelConfig::ATTENTION,
                   config::ModelConfig::DICE, true},
        ParityCase{"AttentionPRelu", config::ModelConfig::ATTENTION, config::ModelConfig::PRELU,
                   false},
        ParityCase{"AttentionSigmoid", config::ModelConfig::ATTENTION, config::ModelConfig::SIGMOID,
                   false},
        ParityCase{"SumDice", config::ModelConfig::SUM, config::ModelConfig::DICE, false},
        ParityCase{"MeanRelu", config::ModelConfig::MEAN, config::ModelConfig::RELU, false}),
    [](const auto& info) { return info.param.name; });

// Truncated behaviours are masked on the GPU too.
TEST(CudaBackendTest, MaskedPositionsChangeNothing) {
  DIN_REQUIRE_CUDA();
  Problem pb = MakeProblem(ProblemOptions{});
  for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
    FieldRows& hist = pb.input.behavior_fields[f];
    const int t = hist.table, d = pb.input.tables[t].dim;
    hist.rows[0] = pb.input.tables[t].rows++;  // sample 0's oldest, beyond max_history
    for (int k = 0; k < d; ++k) pb.tables_f[t].push_back(0.25f);
  }
  pb.SyncFromFloat();
  auto a = CreateBackend("cuda", pb.config, pb.dims).value();
  auto b = CreateBackend("cuda", pb.config, pb.dims).value();
  ASSERT_TRUE(a->TrainStep(pb.input, pb.labels).ok());
  for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
    const int t = pb.input.behavior_fields[f].table, d = pb.input.tables[t].dim;
    for (int k = 0; k < d; ++k) pb.tables_f[t][(pb.input.tables[t].rows - 1) * d + k] = 9.0f;
  }
  pb.SyncFromFloat();
  ASSERT_TRUE(b->TrainStep(pb.input, pb.labels).ok());
  EXPECT_TRUE(std::ranges::equal(a->logits(), b->logits()));
  EXPECT_TRUE(std::ranges::equal(a->grads(), b->grads()));
}

// A batch of one sample and a batch whose histories are all empty.
TEST(CudaBackendTest, EdgeBatches) {
  DIN_REQUIRE_CUDA();
  ProblemOptions o;
  o.batch = 1;
  Problem one = MakeProblem(o);
  ExpectParity(one, "batch of one");
  Problem empty = MakeProblem(ProblemOptions{});
  for (FieldRows& f : empty.input.behavior_fields) {
    f.rows.clear();
    std::fill(f.offsets.begin(), f.offsets.end(), 0u);
  }
  ExpectParity(empty, "empty histories");
}

}  // namespace
}  // namespace din::model
