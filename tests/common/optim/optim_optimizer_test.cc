// Each sparse optimizer against its closed form, computed in double, over several steps.
#include "common/optim/optimizer.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

constexpr uint32_t kDim = 3;
const std::vector<std::vector<float>> kGrads = {
    {0.5f, -0.25f, 0.0f}, {0.1f, 0.2f, -0.3f}, {-0.4f, 0.05f, 0.7f}, {0.3f, -0.6f, 0.2f}};
const std::vector<float> kW0 = {0.1f, -0.2f, 0.3f};

struct Row {
  std::vector<float> w = kW0;
  std::vector<float> state;
};

Row RunSteps(const SparseOptimizer& opt, const std::vector<std::vector<float>>& grads) {
  Row row;
  row.state.resize(opt.StateFloats(kDim));
  opt.InitState(row.state.data(), kDim);
  for (const auto& g : grads) opt.Apply(row.w.data(), row.state.data(), g.data(), kDim);
  return row;
}

TEST(OptimizerTest, SgdIsPlainGradientDescent) {
  config::SgdConfig c;
  c.set_learning_rate(0.1f);
  SgdOptimizer opt(c);
  EXPECT_EQ(opt.StateFloats(kDim), 0u);
  Row row = RunSteps(opt, kGrads);
  for (uint32_t i = 0; i < kDim; ++i) {
    double w = kW0[i];
    for (const auto& g : kGrads) w -= 0.1 * g[i];
    EXPECT_NEAR(row.w[i], w, 1e-6);
  }
}

TEST(OptimizerTest, AdagradAccumulatesSquares) {
  config::AdagradConfig c;
  c.set_learning_rate(0.05f);
  c.set_initial_accumulator(0.1f);
  c.set_epsilon(1e-10f);
  AdagradOptimizer opt(c);
  Row row = RunSteps(opt, kGrads);
  for (uint32_t i = 0; i < kDim; ++i) {
    double w = kW0[i], acc = 0.1;
    for (const auto& g : kGrads) {
      acc += double(g[i]) * g[i];
      w -= 0.05 * g[i] / (std::sqrt(acc) + 1e-10);
    }
    EXPECT_NEAR(row.w[i], w, 1e-6);
    EXPECT_NEAR(row.state[i], acc, 1e-6);
  }
}

TEST(OptimizerTest, RowwiseAdagradKeepsOneAccumulatorOfTheMeanSquare) {
  config::RowwiseAdagradConfig c;
  c.set_learning_rate(0.05f);
  c.set_initial_accumulator(0.1f);
  c.set_epsilon(1e-10f);
  RowwiseAdagradOptimizer opt(c);
  EXPECT_EQ(opt.StateFloats(kDim), 1u);
  EXPECT_EQ(opt.StateFloats(64), 1u);
  Row row = RunSteps(opt, kGrads);
  std::vector<double> w(kW0.begin(), kW0.end());
  double acc = 0.1;
  for (const auto& g : kGrads) {
    double sq = 0;
    for (uint32_t i = 0; i < kDim; ++i) sq += double(g[i]) * g[i];
    acc += sq / kDim;
    // One step size for the whole row: a coordinate with a zero gradient still sees
    // the accumulator grow from the others.
    for (uint32_t i = 0; i < kDim; ++i) w[i] -= 0.05 * g[i] / (std::sqrt(acc) + 1e-10);
  }
  ASSERT_EQ(row.state.size(), 1u);
  EXPECT_NEAR(row.state[0], acc, 1e-6);
  for (uint32_t i = 0; i < kDim; ++i) EXPECT_NEAR(row.w[i], w[i], 1e-6);
}

// Reference Adam in double; `t` counts only the steps this row received.
std::vector<double> AdamReference(const std::vector<std::vector<float>>& grads, double lr,
                                  double b1, double b2, double eps) {
  std::vector<double> w(kW0.begin(), kW0.end()), m(kDim, 0), v(kDim, 0);
  int t = 0;
  for (const auto& g : grads) {
    ++t;
    for (uint32_t i = 0; i < kDim; ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, t));
      const double vhat = v[i] / (1 - std::pow(b2, t));
      w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  return w;
}

TEST(OptimizerTest, AdamFirstStepIsLearningRateTimesSign) {
  // With bias correction, m_hat / sqrt(v_hat) = g / |g| on the first step.
  config::AdamConfig c;
  c.set_learning_rate(0.01f);
  AdamOptimizer opt(c);
  Row row = RunSteps(opt, {kGrads[0]});
  EXPECT_NEAR(row.w[0], kW0[0] - 0.01, 1e-6);
  EXPECT_NEAR(row.w[1], kW0[1] + 0.01, 1e-6);
  EXPECT_NEAR(row.w[2], kW0[2], 1e-6);  // zero gradient: m = 0
  EXPECT_EQ(AdamOptimizer::StepOf(row.state.data(), kDim), 1u);
}

TEST(OptimizerTest, AdamMatchesReferenceWithBiasCorrection) {
  config::AdamConfig c;
  c.set_learning_rate(0.01f);
  c.set_beta1(0.9f);
  c.set_beta2(0.999f);
  c.set_epsilon(1e-8f);
  AdamOptimizer opt(c);
  Row row = RunSteps(opt, kGrads);
  const auto ref = AdamReference(kGrads, 0.01, 0.9, 0.999, 1e-8);
  for (uint32_t i = 0; i < kDim; ++i) EXPECT_NEAR(row.w[i], ref[i], 2e-6);
  EXPECT_EQ(AdamOptimizer::StepOf(row.state.data(), kDim), kGrads.size());
}

TEST(OptimizerTest, AdamIsLazy) {
  // Row A is pushed at global steps 1..4, row B only at steps 2 and 4: B's moments and
  // step count advance only twice, and equal a fresh Adam fed B's two gradients.
  config::AdamConfig c;
  c.set_learning_rate(0.02f);
  AdamOptimizer opt(c);
  Row a, b;
  a.state.resize(opt.StateFloats(kDim));
  b.state.resize(opt.StateFloats(kDim));
  opt.InitState(a.state.data(), kDim);
  opt.InitState(b.state.data(), kDim);
  std::vector<float> b_state_before;
  for (size_t step = 0; step < kGrads.size(); ++step) {
    if (step == 2) b_state_before = b.state;
    opt.Apply(a.w.data(), a.state.data(), kGrads[step].data(), kDim);
    if (step % 2 == 1) opt.Apply(b.w.data(), b.state.data(), kGrads[step].data(), kDim);
    if (step == 2) {
      EXPECT_EQ(b.state, b_state_before);  // untouched while absent
    }
  }
  EXPECT_EQ(AdamOptimizer::StepOf(b.state.data(), kDim), 2u);
  const auto ref = AdamReference({kGrads[1], kGrads[3]}, 0.02, 0.9, 0.999, 1e-8);
  for (uint32_t i = 0; i < kDim; ++i) EXPECT_NEAR(b.w[i], ref[i], 2e-6);
}

TEST(OptimizerTest, FtrlMatchesClosedForm) {
  config::FtrlConfig c;
  c.set_alpha(0.1f);
  c.set_beta(1.0f);
  c.set_l1(0.05f);
  c.set_l2(0.01f);
  FtrlOptimizer opt(c);
  Row row = RunSteps(opt, kGrads);
  for (uint32_t i = 0; i < kDim; ++i) {
    double w = kW0[i], z = 0, n = 0;
    for (const auto& g : kGrads) {
      const double sigma = (std::sqrt(n + double(g[i]) * g[i]) - std::sqrt(n)) / 0.1;
      z += g[i] - sigma * w;
      n += double(g[i]) * g[i];
      w = std::fabs(z) <= 0.05
              ? 0.0
              : -(z - (z > 0 ? 0.05 : -0.05)) / ((1.0 + std::sqrt(n)) / 0.1 + 0.01);
    }
    EXPECT_NEAR(row.w[i], w, 1e-6) << "coordinate " << i;
  }
}

TEST(OptimizerTest, FtrlL1GivesExactZeros) {
  config::FtrlConfig c;
  c.set_l1(10.0f);  // larger than any |z| the gradients can build
  FtrlOptimizer opt(c);
  Row row = RunSteps(opt, kGrads);
  for (float w : row.w) EXPECT_EQ(w, 0.0f);
}

TEST(OptimizerTest, CreateFollowsConfig) {
  config::OptimizerConfig c;
  EXPECT_EQ(SparseOptimizer::Create(c)->Name(), "adagrad");
  c.mutable_adam();
  EXPECT_EQ(SparseOptimizer::Create(c)->Name(), "adam");
  EXPECT_EQ(SparseOptimizer::Create(c)->StateFloats(16), 33u);
  c.mutable_ftrl();
  EXPECT_EQ(SparseOptimizer::Create(c)->Name(), "ftrl");
  c.mutable_sgd();
  EXPECT_EQ(SparseOptimizer::Create(c)->Name(), "sgd");
}

}  // namespace
}  // namespace din
