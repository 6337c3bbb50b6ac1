// ZipfSampler: draws k in [0, n) with probability proportional to (k + q)^-s in O(1)
// memory and expected O(1) time, for any n (up to 2^53), s >= 0 and offset q > 0, by
// rejection-inversion (W. Hörmann, G. Derflinger, "Rejection-inversion to generate
// variates from monotone discrete distributions", ACM TOMACS 6(3), 1996).
//
// With h(x) = x^-s and H its antiderivative, element k owns the interval
// [H(x_k + 1/2) - h(x_k), H(x_k + 1/2)] of the u-axis, x_k = k + q. A uniform u over
// [H(x_0 + 1/2) - h(x_0), H(x_{n-1} + 1/2)] is inverted, x = H^-1(u), rounded to the
// nearest x_k and accepted when u falls in that element's interval; the intervals have
// length h(x_k) exactly, and they do not overlap because h is convex (the integral of h
// over [x_k - 1/2, x_k + 1/2] is at least h(x_k)). The first element's interval ends at
// H(x_0 + 1/2) and is accepted whole, so a small q (a very heavy first element) works too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace din {

class ZipfSampler {
 public:
  ZipfSampler() = default;
  ZipfSampler(uint64_t n, double s, double q = 1.0) : n_(n), s_(s), q_(q) {
    first_end_ = HIntegral(q_ + 0.5);
    lo_ = first_end_ - H(q_);
    hi_ = HIntegral(static_cast<double>(n_ - 1) + q_ + 0.5);
  }

  uint64_t n() const { return n_; }

  // One draw; `uniform` returns doubles uniform in [0, 1).
  template <typename Uniform>
  uint64_t Draw(Uniform&& uniform) const {
    if (n_ <= 1) return 0;
    for (;;) {
      const double u = hi_ + uniform() * (lo_ - hi_);  // in (lo_, hi_]
      if (u <= first_end_) return 0;
      const double kf = std::floor(HIntegralInverse(u) - q_ + 0.5);
      const uint64_t k =
          kf <= 1 ? 1 : std::min(n_ - 1, static_cast<uint64_t>(std::min(kf, 9.0e18)));
      if (u >= HIntegral(k + q_ + 0.5) - H(k + q_)) return k;
    }
  }

  // sum_{k < n} (k + q)^-s: exact for the first 4096 terms, Euler-Maclaurin beyond
  // (relative error far below 1e-9).
  double Mass() const {
    const uint64_t head = std::min<uint64_t>(n_, 4096);
    double sum = 0;
    for (uint64_t k = 0; k < head; ++k) sum += H(k + q_);
    if (head == n_) return sum;
    const double a = head + q_, b = (n_ - 1) + q_;
    // integral_a^b h + (h(a) + h(b)) / 2 + (h'(b) - h'(a)) / 12, the first term counting a.
    auto dh = [this](double x) { return -s_ * std::pow(x, -s_ - 1); };
    return sum + (HIntegral(b) - HIntegral(a)) + (H(a) + H(b)) / 2 + (dh(b) - dh(a)) / 12;
  }

  // Probability of k (for tests): (k + q)^-s / Mass().
  double Probability(uint64_t k, double mass) const { return H(k + q_) / mass; }

 private:
  double H(double x) const { return std::exp(-s_ * std::log(x)); }
  // (x^(1-s) - 1) / (1 - s), log x at s = 1.
  double HIntegral(double x) const {
    const double lx = std::log(x);
    return Expm1Over((1 - s_) * lx) * lx;
  }
  double HIntegralInverse(double u) const {
    double t = u * (1 - s_);
    if (t < -1) t = -1;  // rounding below the domain: x = 0
    return std::exp(Log1pOver(t) * u);
  }
  static double Expm1Over(double x) {  // expm1(x) / x
    return std::abs(x) > 1e-8 ? std::expm1(x) / x : 1 + x / 2 * (1 + x / 3);
  }
  static double Log1pOver(double x) {  // log1p(x) / x
    return std::abs(x) > 1e-8 ? std::log1p(x) / x : 1 - x * (0.5 - x / 3);
  }

  uint64_t n_ = 1;
  double s_ = 1, q_ = 1, lo_ = 0, hi_ = 0, first_end_ = 0;
};

}  // namespace din
