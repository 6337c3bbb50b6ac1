#include "common/optim/row_initializer.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

config::Initializer Init(config::Initializer::Kind kind) {
  config::Initializer c;
  c.set_kind(kind);
  c.set_stddev(0.5f);
  c.set_range(0.25f);
  c.set_value(3.0f);
  return c;
}

TEST(RowInitializerTest, DependsOnlyOnSeedAndId) {
  RowInitializer a(Init(config::Initializer::NORMAL), 11);
  RowInitializer b(Init(config::Initializer::NORMAL), 11);
  RowInitializer other_seed(Init(config::Initializer::NORMAL), 12);
  std::vector<float> x(16), y(16), z(16), w(16);
  a.Fill(123456789, x.data(), 16);
  b.Fill(123456789, y.data(), 16);
  other_seed.Fill(123456789, z.data(), 16);
  a.Fill(123456790, w.data(), 16);
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_NE(x, w);
  // A prefix of a wider row equals the narrower row: coordinates are independent streams.
  std::vector<float> narrow(8);
  a.Fill(123456789, narrow.data(), 8);
  EXPECT_TRUE(std::equal(narrow.begin(), narrow.end(), x.begin()));
}

TEST(RowInitializerTest, Distributions) {
  constexpr int kRows = 20000;
  constexpr uint32_t kDim = 8;
  std::vector<float> v(kDim);
  for (auto kind : {config::Initializer::NORMAL, config::Initializer::TRUNCATED_NORMAL,
                    config::Initializer::UNIFORM}) {
    RowInitializer init(Init(kind), 3);
    double sum = 0, sum2 = 0, max_abs = 0;
    for (int r = 0; r < kRows; ++r) {
      init.Fill(static_cast<uint64_t>(r) * 1000003, v.data(), kDim);
      for (float x : v) {
        sum += x;
        sum2 += double(x) * x;
        max_abs = std::max(max_abs, std::fabs(double(x)));
      }
    }
    const double n = double(kRows) * kDim;
    const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.01) << kind;
    if (kind == config::Initializer::NORMAL) {
      EXPECT_NEAR(sd, 0.5, 0.01);
      EXPECT_GT(max_abs, 1.0);  // tails beyond 2 sd occur
    } else if (kind == config::Initializer::TRUNCATED_NORMAL) {
      EXPECT_LE(max_abs, 1.0);              // 2 * stddev
      EXPECT_NEAR(sd, 0.5 * 0.8796, 0.01);  // sd of N(0,1) truncated at +-2
    } else {
      EXPECT_LE(max_abs, 0.25);
      EXPECT_NEAR(sd, 0.25 / std::sqrt(3.0), 0.005);
    }
  }
  RowInitializer zeros(Init(config::Initializer::ZEROS), 1),
      constant(Init(config::Initializer::CONSTANT), 1);
  zeros.Fill(9, v.data(), kDim);
  for (float x : v) EXPECT_EQ(x, 0.0f);
  constant.Fill(9, v.data(), kDim);
  for (float x : v) EXPECT_EQ(x, 3.0f);
}

}  // namespace
}  // namespace din
