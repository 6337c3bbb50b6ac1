// ZipfSampler (tools/zipf.h): the frequencies of its draws against the exact
// probabilities (k + q)^-s / sum, over exponents, offsets and sizes, and its mass.
#include "tools/zipf.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "common/rng.h"

namespace din {
namespace {

// Pearson's chi-square statistic of `draws` draws from ZipfSampler(n, s, q) against the
// exact probabilities; the tail past `cells - 1` is one cell.
double ChiSquare(uint64_t n, double s, double q, uint64_t draws, uint64_t cells, uint64_t seed) {
  const ZipfSampler z(n, s, q);
  SplitMix64 rng(seed);
  std::vector<double> count(cells, 0.0);
  for (uint64_t i = 0; i < draws; ++i) {
    const uint64_t k = z.Draw([&rng] { return rng.Uniform(); });
    EXPECT_LT(k, n);
    count[std::min(k, cells - 1)] += 1;
  }
  double mass = 0;
  for (uint64_t k = 0; k < n; ++k) mass += std::pow(k + q, -s);
  std::vector<double> p(cells, 0.0);
  for (uint64_t k = 0; k < n; ++k) p[std::min(k, cells - 1)] += std::pow(k + q, -s) / mass;
  double chi2 = 0;
  for (uint64_t c = 0; c < cells; ++c) {
    const double e = p[c] * static_cast<double>(draws);
    chi2 += (count[c] - e) * (count[c] - e) / e;
  }
  return chi2;
}

TEST(ZipfSamplerTest, MatchesExactProbabilities) {
  // 40 cells = 39 degrees of freedom: the 99.99% quantile of chi-square(39) is 80.
  struct Case {
    uint64_t n;
    double s, q;
  };
  for (const Case& c : {Case{40, 1.1, 1.0}, Case{40, 0.0, 1.0}, Case{40, 0.7, 1.0},
                        Case{40, 1.0, 1.0}, Case{40, 2.5, 1.0}, Case{40, 1.1, 0.05},
                        Case{40, 1.1, 7.5}, Case{100000, 1.1, 1.0}, Case{100000, 0.5, 0.3}}) {
    const double chi2 = ChiSquare(c.n, c.s, c.q, 400000, 40, 17);
    EXPECT_LT(chi2, 80) << "n " << c.n << " s " << c.s << " q " << c.q;
  }
  // One element; and a huge range still draws inside it.
  SplitMix64 rng(3);
  EXPECT_EQ(ZipfSampler(1, 1.1).Draw([&rng] { return rng.Uniform(); }), 0u);
  const ZipfSampler big(1ULL << 40, 0.3);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(big.Draw([&rng] { return rng.Uniform(); }), 1ULL << 40);
}

TEST(ZipfSamplerTest, Mass) {
  for (double s : {0.0, 0.5, 1.0, 1.1, 2.0})
    for (double q : {0.1, 1.0, 3.0})
      for (uint64_t n : {1ULL, 100ULL, 5000ULL, 300000ULL}) {
        double exact = 0;
        for (uint64_t k = n; k-- > 0;) exact += std::pow(k + q, -s);
        EXPECT_NEAR(ZipfSampler(n, s, q).Mass(), exact, 1e-9 * exact)
            << "n " << n << " s " << s << " q " << q;
      }
}

}  // namespace
}  // namespace din
