// AUC (ties 1/2), GAUC (docs/design.md §11) and logloss against hand-computed cases.
#include "common/data/metrics.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

TEST(MetricsTest, AucHandCases) {
  const std::vector<float> y = {1, 0, 1, 0};
  EXPECT_DOUBLE_EQ(Auc(y, std::vector<float>{0.9f, 0.1f, 0.8f, 0.2f}), 1.0);
  EXPECT_DOUBLE_EQ(Auc(y, std::vector<float>{0.1f, 0.9f, 0.2f, 0.8f}), 0.0);
  // pos {0.5, 0.3}, neg {0.5, 0.1}: pairs (0.5,0.5)=1/2, (0.5,0.1)=1, (0.3,0.5)=0, (0.3,0.1)=1.
  EXPECT_DOUBLE_EQ(Auc(y, std::vector<float>{0.5f, 0.5f, 0.3f, 0.1f}), 2.5 / 4);
  EXPECT_DOUBLE_EQ(Auc(y, std::vector<double>{0.7, 0.7, 0.7, 0.7}), 0.5);
  EXPECT_TRUE(std::isnan(Auc(std::vector<float>{1, 1}, std::vector<float>{0.1f, 0.2f})));
  EXPECT_TRUE(std::isnan(Auc(y, std::vector<float>{0.1f, NAN, 0.2f, 0.3f})));
}

TEST(MetricsTest, GaucWeightsUsersBySampleCount) {
  // User 1: 4 rows, AUC 0.75; user 2: 2 rows, AUC 0; user 3: only positives (skipped).
  const std::vector<uint64_t> users = {1, 2, 1, 3, 1, 2, 1, 3};
  const std::vector<float> y = {1, 1, 0, 1, 1, 0, 0, 1};
  const std::vector<float> p = {0.9f, 0.1f, 0.8f, 0.5f, 0.3f, 0.6f, 0.2f, 0.4f};
  // User 1 pos {0.9, 0.3}, neg {0.8, 0.2}: (0.9>0.8) (0.9>0.2) (0.3<0.8) (0.3>0.2) = 3/4.
  uint64_t counted = 0;
  EXPECT_DOUBLE_EQ(Gauc(users, y, p, &counted), (4 * 0.75 + 2 * 0.0) / 6);
  EXPECT_EQ(counted, 2u);
  EXPECT_TRUE(
      std::isnan(Gauc(std::vector<uint64_t>{1}, std::vector<float>{1}, std::vector<float>{0.5f})));
}

TEST(MetricsTest, LogLossAndAccumulator) {
  const std::vector<float> y = {1, 0};
  const std::vector<float> p = {0.8f, 0.4f};
  const double want = -(std::log(0.8) + std::log(0.6)) / 2;
  EXPECT_NEAR(LogLoss(y, p), want, 1e-6);
  EXPECT_NEAR(LogLoss(std::vector<float>{1}, std::vector<float>{0.0f}), -std::log(1e-7), 1e-6);

  EvalAccumulator a, b;
  a.Add(1, 1, 0.9f);
  a.Add(1, 0, 0.2f);
  b.Add(2, 1, 0.3f);
  b.Add(2, 0, 0.4f);
  a.Merge(b);
  const EvalMetrics m = a.Compute();
  EXPECT_EQ(m.samples, 4u);
  EXPECT_EQ(m.positives, 2u);
  EXPECT_EQ(m.gauc_users, 2u);
  EXPECT_DOUBLE_EQ(m.gauc, 0.5);     // (2*1 + 2*0) / 4
  EXPECT_DOUBLE_EQ(m.auc, 3.0 / 4);  // pos {0.9,0.3} vs neg {0.2,0.4}
}

}  // namespace
}  // namespace din
