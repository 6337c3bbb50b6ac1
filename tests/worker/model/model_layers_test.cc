// Finite-difference checks of every DIN layer on its own, in double precision.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/worker/model/model_test_util.h"
#include "worker/model/cpu_engine.h"
#include "worker/model/model_math.h"

namespace din::model {
namespace {

using math::Act;
using test::CentralDiff;
using test::ExpectGradClose;

std::vector<double> Random(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = d(rng);
  return v;
}

// L = Σ c ⊙ act(s): checks ∂L/∂s and ∂L/∂α of one activation in training mode (Dice
// through its batch statistics).
void CheckActivation(Act act, double h, double tol) {
  const int n = 9, k = 4;
  std::vector<double> s = Random(n * k, 1, -2, 2), alpha = Random(k, 2, -0.5, 0.5);
  const std::vector<double> c = Random(n * k, 3);
  std::vector<double> y(n * k), p(n * k), mean(k), inv_std(k);
  auto loss = [&] {
    ActivationForward<double>(act, Mode::kTrain, n, k, s.data(), alpha.data(), nullptr, nullptr,
                              0.99, 1e-8, y.data(), p.data(), mean.data(), inv_std.data());
    double l = 0;
    for (int i = 0; i < n * k; ++i) l += c[i] * y[i];
    return l;
  };
  loss();
  std::vector<double> grad = c, dalpha(k);
  ActivationBackward<double>(act, true, n, k, s.data(), y.data(), p.data(), mean.data(),
                             inv_std.data(), alpha.data(), grad.data(), dalpha.data());
  std::vector<double> num_s(n * k), num_a(k);
  for (int i = 0; i < n * k; ++i) num_s[i] = CentralDiff(s, i, h, loss);
  for (int j = 0; j < k; ++j) num_a[j] = CentralDiff(alpha, j, h, loss);
  ExpectGradClose(grad, num_s, tol, tol, "ds");
  if (act == Act::kDice || act == Act::kPRelu) ExpectGradClose(dalpha, num_a, tol, tol, "dalpha");
}

TEST(ActivationGradTest, DiceTrainModeThroughBatchStatistics) {
  CheckActivation(Act::kDice, 1e-5, 1e-7);
}
TEST(ActivationGradTest, PRelu) { CheckActivation(Act::kPRelu, 1e-6, 1e-7); }
TEST(ActivationGradTest, Relu) { CheckActivation(Act::kRelu, 1e-6, 1e-7); }
TEST(ActivationGradTest, Sigmoid) { CheckActivation(Act::kSigmoid, 1e-5, 1e-7); }

// The batch statistics matter: ignoring them in the backward gives a wrong gradient,
// so the Dice check above can fail.
TEST(ActivationGradTest, DiceGradientDiffersWithoutBatchStatisticsTerm) {
  const int n = 9, k = 4;
  std::vector<double> s = Random(n * k, 1, -2, 2), alpha = Random(k, 2);
  std::vector<double> y(n * k), p(n * k), mean(k), inv_std(k), dalpha(k);
  ActivationForward<double>(Act::kDice, Mode::kTrain, n, k, s.data(), alpha.data(), nullptr,
                            nullptr, 0.99, 1e-8, y.data(), p.data(), mean.data(), inv_std.data());
  std::vector<double> with = Random(n * k, 3), without = with;
  ActivationBackward<double>(Act::kDice, true, n, k, s.data(), y.data(), p.data(), mean.data(),
                             inv_std.data(), alpha.data(), with.data(), dalpha.data());
  ActivationBackward<double>(Act::kDice, false, n, k, s.data(), y.data(), p.data(), mean.data(),
                             inv_std.data(), alpha.data(), without.data(), dalpha.data());
  double diff = 0;
  for (int i = 0; i < n * k; ++i) diff = std::max(diff, std::abs(with[i] - without[i]));
  EXPECT_GT(diff, 1e-3);
}

TEST(DiceTest, StatisticsAndRunningAverages) {
  const int n = 7, k = 3;
  const std::vector<double> s = Random(n * k, 4, -3, 3), alpha = Random(k, 5);
  std::vector<double> y(n * k), p(n * k), mean(k), inv_std(k);
  std::vector<double> rmean = {0.5, -0.5, 0.0}, rvar = {1.0, 2.0, 0.5};
  const auto rmean0 = rmean, rvar0 = rvar;
  ActivationForward<double>(Act::kDice, Mode::kTrain, n, k, s.data(), alpha.data(), rmean.data(),
                            rvar.data(), 0.99, 1e-8, y.data(), p.data(), mean.data(),
                            inv_std.data());
  for (int j = 0; j < k; ++j) {
    double m = 0, v = 0;
    for (int r = 0; r < n; ++r) m += s[r * k + j] / n;
    for (int r = 0; r < n; ++r) v += (s[r * k + j] - m) * (s[r * k + j] - m) / n;
    EXPECT_NEAR(mean[j], m, 1e-12);
    EXPECT_NEAR(inv_std[j], 1 / std::sqrt(v + 1e-8), 1e-9);
    EXPECT_NEAR(rmean[j], 0.99 * rmean0[j] + 0.01 * m, 1e-12);
    EXPECT_NEAR(rvar[j], 0.99 * rvar0[j] + 0.01 * v * n / (n - 1), 1e-12);
    for (int r = 0; r < n; ++r) {
      const double x = s[r * k + j], pp = 1 / (1 + std::exp(-(x - m) / std::sqrt(v + 1e-8)));
      EXPECT_NEAR(y[r * k + j], pp * x + (1 - pp) * alpha[j] * x, 1e-12);
    }
  }
}

// With mean and variance forced to 0 (evaluation on zeroed running statistics) the gate
// becomes a step at 0, i.e. Dice is PReLU — forward and backward.
TEST(DiceTest, ReducesToPReluWhenMeanAndVarianceAreZero) {
  const int n = 6, k = 5;
  std::vector<double> s = Random(n * k, 6, 0.05, 2.0);
  for (size_t i = 0; i < s.size(); i += 2) s[i] = -s[i];
  const std::vector<double> alpha = Random(k, 7);
  std::vector<double> zeros(k, 0.0), zeros2(k, 0.0);
  std::vector<double> yd(n * k), yp(n * k), p(n * k), mean(k), inv_std(k);
  ActivationForward<double>(Act::kDice, Mode::kEval, n, k, s.data(), alpha.data(), zeros.data(),
                            zeros2.data(), 0.99, 1e-8, yd.data(), p.data(), mean.data(),
                            inv_std.data());
  ActivationForward<double>(Act::kPRelu, Mode::kEval, n, k, s.data(), alpha.data(), nullptr,
                            nullptr, 0.99, 1e-8, yp.data(), nullptr, nullptr, nullptr);
  for (int i = 0; i < n * k; ++i) EXPECT_NEAR(yd[i], yp[i], 1e-12) << i;
  std::vector<double> gd = Random(n * k, 8), gp = gd, dad(k), dap(k);
  ActivationBackward<double>(Act::kDice, false, n, k, s.data(), yd.data(), p.data(), mean.data(),
                             inv_std.data(), alpha.data(), gd.data(), dad.data());
  ActivationBackward<double>(Act::kPRelu, false, n, k, s.data(), yp.data(), nullptr, nullptr,
                             nullptr, alpha.data(), gp.data(), dap.data());
  for (int i = 0; i < n * k; ++i) EXPECT_NEAR(gd[i], gp[i], 1e-12) << i;
  for (int j = 0; j < k; ++j) EXPECT_NEAR(dad[j], dap[j], 1e-12) << j;
}

// Evaluation normalises with the running statistics: one row gives a finite,
// deterministic value that depends on them.
TEST(DiceTest, EvalModeUsesRunningStatistics) {
  const int k = 3;
  const std::vector<double> s = {0.3, -1.2, 2.0}, alpha = {0.1, 0.2, 0.3};
  std::vector<double> rmean = {0.1, -1.0, 1.0}, rvar = {0.25, 4.0, 1.0};
  std::vector<double> y1(k), y2(k), p(k), mean(k), inv_std(k);
  ActivationForward<double>(Act::kDice, Mode::kEval, 1, k, s.data(), alpha.data(), rmean.data(),
                            rvar.data(), 0.99, 1e-8, y1.data(), p.data(), mean.data(),
                            inv_std.data());
  ActivationForward<double>(Act::kDice, Mode::kEval, 1, k, s.data(), alpha.data(), rmean.data(),
                            rvar.data(), 0.99, 1e-8, y2.data(), p.data(), mean.data(),
                            inv_std.data());
  for (int j = 0; j < k; ++j) {
    ASSERT_TRUE(std::isfinite(y1[j]));
    EXPECT_EQ(y1[j], y2[j]);
    const double pp = 1 / (1 + std::exp(-(s[j] - rmean[j]) / std::sqrt(rvar[j] + 1e-8)));
    EXPECT_NEAR(y1[j], pp * s[j] + (1 - pp) * alpha[j] * s[j], 1e-12);
  }
  EXPECT_EQ(rmean[0], 0.1);  // evaluation leaves the running statistics alone
}

// An MLP alone: L = Σ c ⊙ MLP(x); checks every parameter and the input gradient.
void CheckMlp(int in, std::vector<int> hidden, Act act, int n) {
  config::ModelConfig cfg;
  for (int hs : hidden) cfg.add_top_hidden(hs);
  cfg.set_activation(act == Act::kDice    ? config::ModelConfig::DICE
                     : act == Act::kPRelu ? config::ModelConfig::PRELU
                     : act == Act::kRelu  ? config::ModelConfig::RELU
                                          : config::ModelConfig::SIGMOID);
  cfg.set_pooling(config::ModelConfig::SUM);
  // A layout whose top MLP has input `in`: one context field of width in − 3 + one
  // candidate field of width 1 (u, v_a, u ⊙ v_a take 3 columns).
  FieldDims dims;
  dims.candidate = {1};
  dims.context = {in - 3};
  const ModelLayout layout = ModelLayout::Create(cfg, dims).value();
  ASSERT_EQ(layout.top_in(), in);
  std::vector<float> pf(layout.num_params()), rf(layout.num_running());
  layout.Initialize(pf, rf);
  std::vector<double> params(pf.begin(), pf.end()), running(rf.begin(), rf.end());
  const std::vector<double> noise = Random(params.size(), 9, -0.2, 0.2);
  for (size_t i = 0; i < params.size(); ++i) params[i] += noise[i];
  std::vector<double> x = Random(static_cast<size_t>(n) * in, 10, -1.5, 1.5);
  const std::vector<double> c = Random(n, 11);
  CpuMlp<double> mlp;
  auto loss = [&] {
    mlp.Forward(layout.top(), params.data(), running.data(), 0.99, 1e-8, Mode::kTrain, false,
                x.data(), n);
    double l = 0;
    for (int r = 0; r < n; ++r) l += c[r] * mlp.output()[r];
    return l;
  };
  loss();
  std::vector<double> grads(params.size()), dx(x.size());
  mlp.Backward(layout.top(), params.data(), x.data(), n, c.data(), grads.data(), dx.data());
  std::vector<double> num_p(params.size()), num_x(x.size());
  for (size_t i = 0; i < params.size(); ++i) num_p[i] = CentralDiff(params, i, 1e-6, loss);
  for (size_t i = 0; i < x.size(); ++i) num_x[i] = CentralDiff(x, i, 1e-6, loss);
  ExpectGradClose(grads, num_p, 1e-7, 1e-6, "dparams");
  ExpectGradClose(dx, num_x, 1e-7, 1e-6, "dx");
}

TEST(MlpGradTest, TopMlpDice) { CheckMlp(8, {7, 5}, Act::kDice, 10); }
TEST(MlpGradTest, TopMlpPRelu) { CheckMlp(8, {7, 5}, Act::kPRelu, 10); }
TEST(MlpGradTest, TopMlpSigmoid) { CheckMlp(6, {4}, Act::kSigmoid, 5); }

// The activation unit as the backends run it: CpuAttentionUnit, whose first layer is
// split into a per-sample candidate share v_a·(W_a + W_d) + b and a per-position
// [e_j, v_a ⊙ e_j]·[W_e − W_d; W_p] (model_math.h). Three samples (the middle one
// without positions), L = Σ c_j w_j, Dice over the positions. Every output and gradient
// is compared with the unsplit layer (CpuMlp on the explicit rows [v_a, e_j, v_a − e_j,
// v_a ⊙ e_j]) and the gradients with central differences, so a wrong split (v_a·(W_a −
// W_d), a candidate share not summed over a sample's positions, ∂W_d taken as dwc + dw_e)
// fails.
TEST(ActivationUnitGradTest, SplitFirstLayerMatchesUnsplitAndFiniteDifferences) {
  const int d = 3, batch = 3;
  const std::vector<int32_t> pos_sample = {0, 0, 0, 0, 2, 2, 2};
  const int n = static_cast<int>(pos_sample.size());
  config::ModelConfig cfg;
  cfg.add_attention_hidden(5);
  cfg.add_attention_hidden(4);
  FieldDims dims;
  dims.candidate = {d};
  const ModelLayout layout = ModelLayout::Create(cfg, dims).value();
  std::vector<float> pf(layout.num_params()), rf(layout.num_running());
  layout.Initialize(pf, rf);
  std::vector<double> params(pf.begin(), pf.end()), running(rf.begin(), rf.end());
  // Noise on every parameter: distinct weight blocks, non-zero biases and α.
  const std::vector<double> noise = Random(params.size(), 15, -0.3, 0.3);
  for (size_t i = 0; i < params.size(); ++i) params[i] += noise[i];
  std::vector<double> va = Random(static_cast<size_t>(batch) * d, 12);
  std::vector<double> e = Random(static_cast<size_t>(n) * d, 13);
  const std::vector<double> c = Random(n, 14);

  CpuAttentionUnit<double> unit;
  auto loss = [&] {
    unit.Forward(layout.attention(), params.data(), running.data(), 0.99, 1e-8, Mode::kTrain, false,
                 va.data(), e.data(), pos_sample.data(), batch, n, d);
    double l = 0;
    for (int j = 0; j < n; ++j) l += c[j] * unit.output()[j];
    return l;
  };
  loss();
  const std::vector<double> out(unit.output(), unit.output() + n);
  std::vector<double> grads(params.size()), dva(va.size(), 0.0), de(e.size(), 0.0);
  unit.Backward(layout.attention(), params.data(), c.data(), grads.data(), dva.data(), de.data());

  // The unsplit layer on the explicit 4d-column rows.
  std::vector<double> x(static_cast<size_t>(n) * 4 * d), dx(x.size());
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < d; ++k)
      math::AttentionInput(va[pos_sample[j] * d + k], e[j * d + k], &x[j * 4 * d], k, d);
  CpuMlp<double> mlp;
  mlp.Forward(layout.attention(), params.data(), running.data(), 0.99, 1e-8, Mode::kTrain, false,
              x.data(), n);
  std::vector<double> ref_grads(params.size()), ref_dva(va.size(), 0.0), ref_de(e.size());
  mlp.Backward(layout.attention(), params.data(), x.data(), n, c.data(), ref_grads.data(),
               dx.data());
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < d; ++k) {
      double a, b;
      math::AttentionInputBackward(&dx[j * 4 * d], k, d, va[pos_sample[j] * d + k], e[j * d + k],
                                   &a, &b);
      ref_dva[pos_sample[j] * d + k] += a;
      ref_de[j * d + k] = b;
    }
  ExpectGradClose(out, std::vector<double>(mlp.output(), mlp.output() + n), 1e-12, 1e-10,
                  "scores against the unsplit layer");
  ExpectGradClose(grads, ref_grads, 1e-12, 1e-10, "dparams against the unsplit layer");
  ExpectGradClose(dva, ref_dva, 1e-12, 1e-10, "dva against the unsplit layer");
  ExpectGradClose(de, ref_de, 1e-12, 1e-10, "de against the unsplit layer");
  for (int k = 0; k < d; ++k) EXPECT_EQ(dva[d + k], 0.0) << "sample 1 has no positions";

  std::vector<double> num_va(va.size()), num_e(e.size()), num_p(params.size());
  for (size_t i = 0; i < va.size(); ++i) num_va[i] = CentralDiff(va, i, 1e-6, loss);
  for (size_t i = 0; i < e.size(); ++i) num_e[i] = CentralDiff(e, i, 1e-6, loss);
  for (size_t i = 0; i < params.size(); ++i) num_p[i] = CentralDiff(params, i, 1e-6, loss);
  ExpectGradClose(dva, num_va, 1e-7, 1e-6, "dva");
  ExpectGradClose(de, num_e, 1e-7, 1e-6, "de");
  ExpectGradClose(grads, num_p, 1e-7, 1e-6, "dparams");
}

// The host's vectorisable float exp against libm: within a few ulp over the range the
// model uses, clamped (finite, no NaN) outside it.
TEST(MathTest, HostExpIsAccurate) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(math::HostExp(x) - want) / want);
  }
  EXPECT_LT(worst, 5e-7);
  EXPECT_TRUE(std::isfinite(math::HostExp(1000.0f)));
  EXPECT_GE(math::HostExp(-1000.0f), 0.0f);
  EXPECT_EQ(math::Sigmoid(-1000.0f) >= 0.0f, true);
  EXPECT_NEAR(math::Sigmoid(0.3f), 1.0 / (1.0 + std::exp(-0.3)), 1e-7);
}

TEST(LossGradTest, BceWithLogits) {
  for (double y : {0.0, 1.0})
    for (double x : {-40.0, -3.0, -0.2, 0.0, 0.7, 5.0, 40.0}) {
      const double h = 1e-6;
      const double num = (math::BceWithLogits(x + h, y) - math::BceWithLogits(x - h, y)) / (2 * h);
      EXPECT_NEAR(math::BceGrad(x, y), num, 1e-7) << x << " " << y;
      const double p = 1 / (1 + std::exp(-x));
      if (std::abs(x) < 30) {
        EXPECT_NEAR(math::BceWithLogits(x, y), -(y * std::log(p) + (1 - y) * std::log(1 - p)),
                    1e-9);
      }
      EXPECT_TRUE(
          std::isfinite(math::BceWithLogits(static_cast<float>(x) * 1e3f, static_cast<float>(y))));
    }
}

}  // namespace
}  // namespace din::model
