// SplitMix64 and Shuffle (common/rng.h): the published SplitMix64 reference outputs, the
// derived uniform draws, and the fixed Fisher-Yates order every data set depends on.
#include "common/rng.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

TEST(RngTest, ReferenceOutputs) {
  // Vigna's splitmix64.c: seed 0 and seed 1234567.
  SplitMix64 zero(0);
  EXPECT_EQ(zero.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(zero.Next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(zero.Next(), 0x06c45d188009454fULL);
  SplitMix64 other(1234567);
  EXPECT_EQ(other.Next(), 6457827717110365317ULL);
  EXPECT_EQ(other.Next(), 3203168211198807973ULL);
}

TEST(RngTest, StateResumesTheStream) {
  SplitMix64 a(99);
  for (int i = 0; i < 5; ++i) a.Next();
  SplitMix64 b(a.state());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.Next(), b.Next());
  EXPECT_EQ(SplitMix64(7).state(), 7u);
}

TEST(RngTest, UniformAndSymmetricComeFromTheTopBits) {
  SplitMix64 raw(5), u(5), s(5);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t bits = raw.Next();
    const double x = u.Uniform();
    EXPECT_EQ(x, std::ldexp(static_cast<double>(bits >> 11), -53));
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    const uint64_t bits2 = raw.Next();
    u.Next();
    s.Next();
    const float y = s.Symmetric();
    EXPECT_EQ(y, std::ldexp(static_cast<float>(bits2 >> 40), -23) - 1.0f);
    EXPECT_GE(y, -1.0f);
    EXPECT_LT(y, 1.0f);
  }
}

TEST(RngTest, ShuffleIsTheFixedFisherYates) {
  std::vector<int> v(100);
  std::iota(v.begin(), v.end(), 0);
  SplitMix64 rng(42);
  Shuffle(v.begin(), v.end(), rng);
  // The documented procedure, step by step from the same stream.
  std::vector<int> expected(100);
  std::iota(expected.begin(), expected.end(), 0);
  SplitMix64 check(42);
  for (size_t i = expected.size(); i > 1; --i) {
    const size_t j = check.Next() % i;
    std::swap(expected[i - 1], expected[j]);
  }
  EXPECT_EQ(v, expected);
  EXPECT_EQ(rng.state(), check.state());  // one draw per step, no more
  std::vector<int> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> identity(100);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(v, identity);
}

TEST(RngTest, ShuffleOfZeroOrOneElementDrawsNothing) {
  std::vector<int> none, one = {7};
  SplitMix64 rng(3);
  Shuffle(none.begin(), none.end(), rng);
  Shuffle(one.begin(), one.end(), rng);
  EXPECT_EQ(one, std::vector<int>{7});
  EXPECT_EQ(rng.state(), 3u);
}

}  // namespace
}  // namespace din
