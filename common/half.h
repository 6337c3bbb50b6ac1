// 16-bit floating-point formats for stored weights (docs/design.md §5): IEEE binary16
// (fp16: 5 exponent bits, 10 mantissa bits) and bfloat16 (bf16: the top 16 bits of a
// float32, 8 exponent bits, 7 mantissa bits). Conversion to float32 is exact. Conversion
// from float32 rounds either to nearest-even or stochastically: a value between two
// neighbours lo < |x| < hi rounds up with probability (|x| - lo) / (hi - lo), so the
// expected stored value is x and small updates are not lost to rounding.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace din {

enum class WeightFormat : uint8_t { kFp32 = 0, kFp16 = 1, kBf16 = 2 };

inline uint32_t WeightBytes(WeightFormat f) { return f == WeightFormat::kFp32 ? 4 : 2; }
inline std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kFp16:
      return "fp16";
    case WeightFormat::kBf16:
      return "bf16";
    case WeightFormat::kFp32:
      break;
  }
  return "fp32";
}

namespace half_detail {

// The 16-bit value nearest x towards zero (magnitude truncated); NaN stays NaN, an
// infinity stays infinite, a finite value past the largest finite one gives that one.
inline uint16_t TruncFp16(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  const uint32_t e8 = (b >> 23) & 0xFFu;
  uint32_t mant = b & 0x7FFFFFu;
  if (e8 == 0xFF) return sign | 0x7C00u | (mant != 0 ? 0x200u : 0u);
  const int exp = static_cast<int>(e8) - 127 + 15;
  if (exp >= 31) return sign | 0x7BFFu;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000u;  // subnormal half: m * 2^-24
    return sign | static_cast<uint16_t>(mant >> (14 - exp));
  }
  return sign | static_cast<uint16_t>((static_cast<uint32_t>(exp) << 10) | (mant >> 13));
}

inline float Fp16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    // Subnormal (or zero): m * 2^-24, exact in float32.
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;
    return sign != 0 ? -v : v;
  }
  return std::bit_cast<float>(sign | ((e + 112) << 23) | (m << 13));
}

inline uint16_t TruncBf16(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  if ((b & 0x7F800000u) == 0x7F800000u && (b & 0x7FFFFFu) != 0)
    return static_cast<uint16_t>((b >> 16) | 0x40u);  // NaN stays NaN
  return static_cast<uint16_t>(b >> 16);
}

inline float Bf16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline float ToFloat(uint16_t h, WeightFormat f) {
  return f == WeightFormat::kFp16 ? Fp16ToFloat(h) : Bf16ToFloat(h);
}
inline uint16_t Trunc(float x, WeightFormat f) {
  return f == WeightFormat::kFp16 ? TruncFp16(x) : TruncBf16(x);
}

// For finite x whose truncation `lo` is not x itself: the next value away from zero
// (its magnitude is lo's + 1 ulp) and where |x| lies between the two, in [0, 1).
inline float Fraction(double x, uint16_t lo, WeightFormat f, uint16_t* hi) {
  // In double: past bf16's largest finite value the next step is outside float32.
  *hi = static_cast<uint16_t>(lo + 1);
  const double a = ToFloat(lo, f);
  double b = ToFloat(*hi, f);
  if ((*hi & 0x7FFFu) == (f == WeightFormat::kFp16 ? 0x7C00u : 0x7F80u))
    b = a + (a - ToFloat(static_cast<uint16_t>(lo - 1), f));  // past the largest finite
  return static_cast<float>((x - a) / (b - a));
}

}  // namespace half_detail

inline float HalfToFloat(uint16_t h, WeightFormat f) { return half_detail::ToFloat(h, f); }

// Round to nearest, ties to even.
inline uint16_t FloatToHalf(float x, WeightFormat f) {
  const uint16_t lo = half_detail::Trunc(x, f);
  if ((lo & 0x7FFFu) >= (f == WeightFormat::kFp16 ? 0x7C00u : 0x7F80u)) return lo;  // inf, NaN
  if (half_detail::ToFloat(lo, f) == x) return lo;
  uint16_t hi;
  const float frac = half_detail::Fraction(x, lo, f, &hi);
  if (frac > 0.5f || (frac == 0.5f && (lo & 1u) != 0)) return hi;
  return lo;
}

// Stochastic rounding; `random` supplies the uniform draw (its top 24 bits are used).
inline uint16_t FloatToHalfStochastic(float x, WeightFormat f, uint64_t random) {
  const uint16_t lo = half_detail::Trunc(x, f);
  if ((lo & 0x7FFFu) >= (f == WeightFormat::kFp16 ? 0x7C00u : 0x7F80u)) return lo;
  if (half_detail::ToFloat(lo, f) == x) return lo;
  uint16_t hi;
  const float frac = half_detail::Fraction(x, lo, f, &hi);
  const float u = static_cast<float>(random >> 40) * (1.0f / 16777216.0f);
  return u < frac ? hi : lo;
}

// ---- Bulk conversions for the half-precision wire (docs/design.md §4): the same results
// as FloatToHalf / HalfToFloat, computed without branches on the value so that a frame
// of millions of values converts at memory speed (the loops vectorise). A frame's bytes
// need not be 2-aligned: misaligned arrays go through a small buffer.

// float32 -> fp16, round to nearest even; NaN stays NaN (quiet), past the largest finite
// value by half an ulp or more is infinity. The float arithmetic does the rounding
// (default rounding mode, no -ffast-math): scaling |x| by 2^112 then 2^-110 makes
// overflow infinite, and adding a power of two aligned with x's fp16 ulp rounds the
// mantissa at the right bit, subnormals included.
inline uint16_t FloatToFp16Nearest(float x) {
  const uint32_t w = std::bit_cast<uint32_t>(x);
  const float abs = std::bit_cast<float>(w & 0x7FFFFFFFu);
  float base = (abs * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t bias = std::max(shl1_w & 0xFF000000u, 0x71000000u);
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = std::bit_cast<uint32_t>(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  // Masks rather than branches, so that loops of conversions vectorise.
  const uint32_t nan = 0u - static_cast<uint32_t>(shl1_w > 0xFF000000u);
  return static_cast<uint16_t>((sign >> 16) | (nonsign & ~nan) | (0x7E00u & nan));
}

// float32 -> bf16, round to nearest even; NaN stays NaN (quiet).
inline uint16_t FloatToBf16Nearest(float x) {
  const uint32_t b = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const uint32_t nan = 0u - static_cast<uint32_t>((b & 0x7FFFFFFFu) > 0x7F800000u);
  return static_cast<uint16_t>((rounded & ~nan) | (((b >> 16) | 0x40u) & nan));
}

// fp16 -> float32 without branches on the value (exact; a NaN stays a NaN, its payload
// quieted): normal values by moving the exponent and scaling by 2^-112, subnormals by a
// float subtraction that normalises them.
inline float Fp16ToFloatFast(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const float normalized = std::bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const float denormalized = std::bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t sub = 0u - static_cast<uint32_t>(two_w < (1u << 27));
  return std::bit_cast<float>(sign | (std::bit_cast<uint32_t>(denormalized) & sub) |
                              (std::bit_cast<uint32_t>(normalized) & ~sub));
}

namespace half_detail {
template <bool kFp16>
inline void Narrow(const float* in, size_t n, float scale, uint16_t* out) {
  for (size_t i = 0; i < n; ++i)
    out[i] = kFp16 ? FloatToFp16Nearest(in[i] * scale) : FloatToBf16Nearest(in[i] * scale);
}
template <bool kFp16>
inline void Widen(const uint16_t* in, size_t n, float scale, float* out) {
  for (size_t i = 0; i < n; ++i)
    out[i] = (kFp16 ? Fp16ToFloatFast(in[i]) : Bf16ToFloat(in[i])) * scale;
}
}  // namespace half_detail

// n floats, each times `scale` (a power of two: exact), to 16-bit values at `out`. The
// loops run on uint16_t arrays (vectorised); a misaligned `out` goes through a buffer.
inline void FloatsToHalves(const float* in, size_t n, WeightFormat f, float scale, void* out) {
  const bool fp16 = f == WeightFormat::kFp16;
  if (reinterpret_cast<uintptr_t>(out) % alignof(uint16_t) == 0) {
    auto* o = static_cast<uint16_t*>(out);
    fp16 ? half_detail::Narrow<true>(in, n, scale, o) : half_detail::Narrow<false>(in, n, scale, o);
    return;
  }
  uint16_t buf[256];
  for (size_t done = 0; done < n; done += 256) {
    const size_t m = n - done < 256 ? n - done : 256;
    fp16 ? half_detail::Narrow<true>(in + done, m, scale, buf)
         : half_detail::Narrow<false>(in + done, m, scale, buf);
    std::memcpy(static_cast<std::byte*>(out) + 2 * done, buf, 2 * m);
  }
}

// n 16-bit values at `in` to floats, each times `scale` (a power of two). A NaN stays a
// NaN (fp16: quieted).
inline void HalvesToFloats(const void* in, size_t n, WeightFormat f, float scale, float* out) {
  const bool fp16 = f == WeightFormat::kFp16;
  if (reinterpret_cast<uintptr_t>(in) % alignof(uint16_t) == 0) {
    const auto* p = static_cast<const uint16_t*>(in);
    fp16 ? half_detail::Widen<true>(p, n, scale, out) : half_detail::Widen<false>(p, n, scale, out);
    return;
  }
  uint16_t buf[256];
  for (size_t done = 0; done < n; done += 256) {
    const size_t m = n - done < 256 ? n - done : 256;
    std::memcpy(buf, static_cast<const std::byte*>(in) + 2 * done, 2 * m);
    fp16 ? half_detail::Widen<true>(buf, m, scale, out + done)
         : half_detail::Widen<false>(buf, m, scale, out + done);
  }
}

}  // namespace din
