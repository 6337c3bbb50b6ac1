// The 16-bit weight formats (common/half.h): exact widening, round-to-nearest-even
// against independent references, and stochastic rounding that is unbiased and only
// ever picks one of the two neighbours.
#include "common/half.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "common/hash.h"

namespace din {
namespace {

const WeightFormat kHalves[] = {WeightFormat::kFp16, WeightFormat::kBf16};

bool IsNan16(uint16_t h, WeightFormat f) {
  return f == WeightFormat::kFp16 ? (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0
                                  : (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0;
}

TEST(HalfTest, EveryValueWidensExactlyAndNarrowsBack) {
  for (WeightFormat f : kHalves) {
    for (uint32_t h = 0; h < 65536; ++h) {
      const auto bits = static_cast<uint16_t>(h);
      const float x = HalfToFloat(bits, f);
      if (IsNan16(bits, f)) {
        EXPECT_TRUE(std::isnan(x));
        EXPECT_TRUE(IsNan16(FloatToHalf(x, f), f));
        continue;
      }
      ASSERT_EQ(FloatToHalf(x, f), bits) << WeightFormatName(f) << " " << h;
      // A representable value is never moved by stochastic rounding.
      ASSERT_EQ(FloatToHalfStochastic(x, f, Mix64(h)), bits);
    }
  }
  EXPECT_EQ(HalfToFloat(0x3C00, WeightFormat::kFp16), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001, WeightFormat::kFp16), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7BFF, WeightFormat::kFp16), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x3F80, WeightFormat::kBf16), 1.0f);
}

uint16_t Bf16Reference(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

TEST(HalfTest, NearestEvenMatchesReferences) {
  for (uint64_t i = 0; i < 200000; ++i) {
    // Random bit patterns cover every exponent; the magnitudes of embedding weights
    // (uniform in +-2) are drawn too.
    const uint32_t bits = static_cast<uint32_t>(Mix64(i));
    float x;
    std::memcpy(&x, &bits, 4);
    if (i % 2 == 1) x = static_cast<float>(static_cast<double>(Mix64(i) >> 11) * 0x1p-53 * 4 - 2);
    if (std::isnan(x)) continue;
    ASSERT_EQ(FloatToHalf(x, WeightFormat::kBf16), Bf16Reference(x)) << x;
#ifdef __FLT16_MAX__
    const _Float16 ref = static_cast<_Float16>(x);
    uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    ASSERT_EQ(FloatToHalf(x, WeightFormat::kFp16), ref_bits) << x;
#endif
  }
  // Ties go to even; past the largest finite value (by half an ulp or more) is infinity.
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11), WeightFormat::kFp16), 0x3C00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11), WeightFormat::kFp16), 0x3C02);
  EXPECT_EQ(FloatToHalf(65519.0f, WeightFormat::kFp16), 0x7BFF);
  EXPECT_EQ(FloatToHalf(65520.0f, WeightFormat::kFp16), 0x7C00);
  EXPECT_EQ(FloatToHalf(-std::ldexp(1.0f, -26), WeightFormat::kFp16), 0x8000);
}

TEST(HalfTest, BulkWireConversionsMatchTheScalarOnes) {
  // The wire's branch-free conversions (FloatsToHalves, HalvesToFloats) against
  // FloatToHalf / HalfToFloat: every exponent and sign, with the dropped mantissa bits
  // at zero, one, just below, at and just above the halfway point (ties), and all ones,
  // plus random patterns. NaN only has to stay NaN.
  std::vector<float> xs;
  for (uint32_t high = 0; high < (1u << 16); ++high)
    for (uint32_t low : {0x0u, 0x1u, 0xFFFu, 0x1000u, 0x1001u, 0x1FFFu, 0x7FFFu, 0x8000u, 0x8001u,
                         0xFFFFu, 0x2000u, 0x3000u})
      xs.push_back(std::bit_cast<float>(high << 16 | low));
  for (uint64_t i = 0; i < 100000; ++i) xs.push_back(std::bit_cast<float>(uint32_t(Mix64(i))));
  for (WeightFormat f : kHalves) {
    std::vector<uint16_t> halves(xs.size());
    FloatsToHalves(xs.data(), xs.size(), f, 1.0f, halves.data());
    for (size_t i = 0; i < xs.size(); ++i) {
      if (std::isnan(xs[i])) {
        ASSERT_TRUE(IsNan16(halves[i], f)) << WeightFormatName(f) << " " << i;
        continue;
      }
      ASSERT_EQ(halves[i], FloatToHalf(xs[i], f))
          << WeightFormatName(f) << " " << xs[i] << " bits " << std::bit_cast<uint32_t>(xs[i]);
    }
    std::vector<float> back(xs.size());
    HalvesToFloats(halves.data(), halves.size(), f, 1.0f, back.data());
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!std::isnan(xs[i])) {
        ASSERT_EQ(back[i], HalfToFloat(halves[i], f)) << i;
      }
    }
  }
  // Widening every 16-bit pattern, aligned and not: the scalar value (NaN: a NaN).
  for (WeightFormat f : kHalves) {
    std::vector<uint16_t> all(65537);
    for (uint32_t h = 0; h < 65536; ++h) all[h + 1] = static_cast<uint16_t>(h);
    std::vector<float> wide(65536), wide_odd(65536);
    HalvesToFloats(all.data() + 1, 65536, f, 1.0f, wide.data());
    for (uint32_t h = 0; h < 65536; ++h) {
      const float want = HalfToFloat(static_cast<uint16_t>(h), f);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(wide[h])) << h;
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(wide[h]), std::bit_cast<uint32_t>(want))
            << WeightFormatName(f) << " " << h;
      }
    }
    std::vector<uint8_t> bytes(2 * 65536 + 1);
    std::memcpy(bytes.data() + 1, all.data() + 1, 2 * 65536);
    HalvesToFloats(bytes.data() + 1, 65536, f, 1.0f, wide_odd.data());
    for (uint32_t h = 0; h < 65536; ++h)
      ASSERT_TRUE(std::bit_cast<uint32_t>(wide_odd[h]) == std::bit_cast<uint32_t>(wide[h]) ||
                  std::isnan(wide[h]))
          << h;
    // Narrowing into a misaligned buffer writes the aligned result's bytes.
    std::vector<float> xs2 = {1.0f, -2.5f, 65504.0f, 1e-6f, 3.0e5f};
    std::vector<uint16_t> aligned(xs2.size());
    FloatsToHalves(xs2.data(), xs2.size(), f, 1.0f, aligned.data());
    std::vector<uint8_t> odd(2 * xs2.size() + 1);
    FloatsToHalves(xs2.data(), xs2.size(), f, 1.0f, odd.data() + 1);
    EXPECT_EQ(0, std::memcmp(odd.data() + 1, aligned.data(), 2 * xs2.size()));
  }
  // The scale is applied exactly (a power of two) before narrowing and after widening.
  const float x = 3.0e-7f;
  uint16_t h;
  FloatsToHalves(&x, 1, WeightFormat::kFp16, 0x1p20f, &h);
  EXPECT_EQ(h, FloatToHalf(x * 0x1p20f, WeightFormat::kFp16));
  float y;
  HalvesToFloats(&h, 1, WeightFormat::kFp16, 0x1p-20f, &y);
  EXPECT_EQ(y, HalfToFloat(h, WeightFormat::kFp16) * 0x1p-20f);
}

TEST(HalfTest, StochasticRoundingIsUnbiasedBetweenTheTwoNeighbours) {
  // A value a quarter of the way between two neighbours, in the normal and the subnormal
  // range of fp16 and in bf16: only the neighbours come out, the upper one about a
  // quarter of the time, and the mean is the value.
  struct Case {
    WeightFormat f;
    uint16_t lo;
  };
  for (const Case c : {Case{WeightFormat::kFp16, 0x3C00}, Case{WeightFormat::kFp16, 0x0005},
                       Case{WeightFormat::kFp16, 0xBC00}, Case{WeightFormat::kBf16, 0x3F80},
                       Case{WeightFormat::kBf16, 0xBB12}}) {
    const float a = HalfToFloat(c.lo, c.f);
    const float b = HalfToFloat(static_cast<uint16_t>(c.lo + 1), c.f);
    const float x = a + 0.25f * (b - a);
    constexpr int kDraws = 40000;
    int up = 0;
    double sum = 0;
    for (int i = 0; i < kDraws; ++i) {
      const uint16_t h = FloatToHalfStochastic(x, c.f, Mix64(i));
      ASSERT_TRUE(h == c.lo || h == c.lo + 1) << h;
      up += h != c.lo;
      sum += HalfToFloat(h, c.f);
    }
    // Binomial(40000, 0.25): sd about 87.
    EXPECT_NEAR(up, kDraws / 4, 500) << c.lo;
    EXPECT_NEAR(sum / kDraws, x, std::fabs(b - a) * 0.02) << c.lo;
  }
}

}  // namespace
}  // namespace din
