// Per-element math of the DIN layers (docs/design.md §8), shared by the CPU backend and the CUDA
// kernels: both backends call these functions, so they differ only in launch, indexing
// and reduction code, and the CPU tests exercise the same formulas the GPU runs.
//
// Every function is a template over the scalar type (float in production, double in
// the gradient-check reference) and is usable in host and device code.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DIN_HD __host__ __device__
#else
#define DIN_HD
#endif

namespace din::model::math {

// Hidden-layer activations. kNone marks the linear output layer of an MLP.
enum class Act : int { kNone = 0, kDice = 1, kPRelu = 2, kRelu = 3, kSigmoid = 4 };

// exp for float on the host: Cephes' range reduction and polynomial (about 2 ulp),
// branch-free and call-free so that the CPU's Dice and sigmoid loops vectorise (libm's
// expf does not). Inputs are clamped to [-87.3, 88.3], the normal-float range.
inline float HostExp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return y * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

DIN_HD inline float Exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return HostExp(x);
#endif
}
DIN_HD inline double Exp(double x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}
DIN_HD inline float Log1p(float x) {
#if defined(__CUDA_ARCH__)
  return log1pf(x);
#else
  return std::log1p(x);
#endif
}
DIN_HD inline double Log1p(double x) {
#if defined(__CUDA_ARCH__)
  return ::log1p(x);
#else
  return std::log1p(x);
#endif
}
DIN_HD inline float Sqrt(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
DIN_HD inline double Sqrt(double x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// Overflow-free logistic function (branch-free so that CPU loops vectorise).
template <typename T>
DIN_HD inline T Sigmoid(T x) {
  const T e = Exp(x >= T(0) ? -x : x);  // exp(-|x|) in (0, 1]
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

// ---- Dice (batch-normalised gate) --------------------------------------------------
// y = p·s + (1 − p)·α·s with p = sigmoid(x̂), x̂ = (s − mean)·inv_std.

template <typename T>
DIN_HD inline T InvStd(T var, T eps) {
  return T(1) / Sqrt(var + eps);
}

template <typename T>
DIN_HD inline T DiceForward(T s, T p, T alpha) {
  return s * (alpha + p * (T(1) - alpha));
}

// Backward of one Dice element. Returns ∂y/∂s·dy with p held fixed; writes the gradient
// reaching x̂ (which the batch-statistics step turns into more ∂/∂s) and the element's
// contribution to ∂/∂α.
template <typename T>
DIN_HD inline T DiceBackward(T dy, T s, T p, T alpha, T* dxhat, T* dalpha) {
  *dxhat = dy * s * (T(1) - alpha) * p * (T(1) - p);
  *dalpha = dy * s * (T(1) - p);
  return dy * (alpha + p * (T(1) - alpha));
}

// Gradient through the batch normalisation x̂ = (s − mean(s))/sqrt(var(s) + ε) with
// batch statistics: the usual batch-norm input gradient, given the column means of
// dx̂ and of dx̂·x̂.
template <typename T>
DIN_HD inline T BatchNormInputGrad(T dxhat, T xhat, T mean_dxhat, T mean_dxhat_xhat, T inv_std) {
  return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

// running = momentum·running + (1 − momentum)·batch.
template <typename T>
DIN_HD inline T RunningUpdate(T running, T batch, T momentum) {
  return momentum * running + (T(1) - momentum) * batch;
}

// ---- PReLU, ReLU, sigmoid ----------------------------------------------------------

template <typename T>
DIN_HD inline T PReluForward(T s, T alpha) {
  return s > T(0) ? s : alpha * s;
}
template <typename T>
DIN_HD inline T PReluBackward(T dy, T s, T alpha, T* dalpha) {
  *dalpha = s > T(0) ? T(0) : dy * s;
  return s > T(0) ? dy : dy * alpha;
}
template <typename T>
DIN_HD inline T ReluForward(T s) {
  return s > T(0) ? s : T(0);
}
template <typename T>
DIN_HD inline T ReluBackward(T dy, T s) {
  return s > T(0) ? dy : T(0);
}
// For the sigmoid activation, y is the forward output.
template <typename T>
DIN_HD inline T SigmoidBackward(T dy, T y) {
  return dy * y * (T(1) - y);
}

// Forward of every activation but Dice (which needs its batch statistics).
template <typename T>
DIN_HD inline T PointwiseForward(Act act, T s, T alpha) {
  switch (act) {
    case Act::kPRelu:
      return PReluForward(s, alpha);
    case Act::kRelu:
      return ReluForward(s);
    case Act::kSigmoid:
      return Sigmoid(s);
    default:
      return s;
  }
}
// Backward of every activation but Dice; y is the forward output, *dalpha the element's
// contribution to ∂/∂α (0 where the activation has no α).
template <typename T>
DIN_HD inline T PointwiseBackward(Act act, T dy, T s, T y, T alpha, T* dalpha) {
  *dalpha = T(0);
  switch (act) {
    case Act::kPRelu:
      return PReluBackward(dy, s, alpha, dalpha);
    case Act::kRelu:
      return ReluBackward(dy, s);
    case Act::kSigmoid:
      return SigmoidBackward(dy, y);
    default:
      return dy;
  }
}

// ---- Activation-unit input and its gradient ----------------------------------------
// Input row of the activation unit for one (candidate, behaviour) pair, coordinate k of
// an item of width d: [v_a, e_j, v_a − e_j, v_a ⊙ e_j], four blocks of d columns.

template <typename T>
DIN_HD inline void AttentionInput(T va, T e, T* row, int k, int d) {
  row[k] = va;
  row[d + k] = e;
  row[2 * d + k] = va - e;
  row[3 * d + k] = va * e;
}

// Gradients reaching v_a[k] and e_j[k] from the gradient of one input row.
template <typename T>
DIN_HD inline void AttentionInputBackward(const T* drow, int k, int d, T va, T e, T* dva, T* de) {
  const T d0 = drow[k], d1 = drow[d + k], d2 = drow[2 * d + k], d3 = drow[3 * d + k];
  *dva = d0 + d2 + d3 * e;
  *de = d1 - d2 + d3 * va;
}

// ---- The activation unit's first layer, split ---------------------------------------
// With the first layer's weight W [4d x out] in the input's blocks, W = [W_a; W_e; W_d; W_p]
// (d rows each), one input row gives
//   [v_a, e, v_a − e, v_a ⊙ e]·W = v_a·(W_a + W_d) + e·(W_e − W_d) + (v_a ⊙ e)·W_p.
// v_a·(W_a + W_d) + b is the same for every position of a sample: the backends compute
// it once per sample (a [batch x d]·[d x out] GEMM) and per position only
// [e, v_a ⊙ e]·[W_e − W_d; W_p] (2d columns instead of 4d).

// Element i < d·out of the fused weights: wc = W_a + W_d [d x out] (candidate) and
// w2 = [W_e − W_d; W_p] [2d x out] (per position).
template <typename T>
DIN_HD inline void FuseAttentionWeight(const T* w, int d, int out, size_t i, T* wc, T* w2) {
  const size_t blk = static_cast<size_t>(d) * out;
  wc[i] = w[i] + w[2 * blk + i];
  w2[i] = w[blk + i] - w[2 * blk + i];
  w2[blk + i] = w[3 * blk + i];
}

// Per-position input row [e, v_a ⊙ e], coordinate k of d.
template <typename T>
DIN_HD inline void PositionInput(T va, T e, T* row, int k, int d) {
  row[k] = e;
  row[d + k] = va * e;
}

// Gradients reaching v_a[k] (this position's share) and e[k] from the gradient of one
// per-position row.
template <typename T>
DIN_HD inline void PositionInputBackward(const T* drow, int k, int d, T va, T e, T* dva, T* de) {
  *dva = drow[d + k] * e;
  *de = drow[k] + drow[d + k] * va;
}

// Element i < d·out of the first layer's weight gradient, in W's blocks, from
// dwc = Σ_samples v_aᵀ·(Σ_positions dS) and dw2 = Σ_positions [e, v_a ⊙ e]ᵀ·dS:
//   ∂W_a = dwc, ∂W_e = dw2[e], ∂W_d = Σ (v_a − e)ᵀ·dS = dwc − dw2[e], ∂W_p = dw2[p].
template <typename T>
DIN_HD inline void SplitAttentionWeightGrad(const T* dwc, const T* dw2, int d, int out, size_t i,
                                            T* dw) {
  const size_t blk = static_cast<size_t>(d) * out;
  dw[i] = dwc[i];
  dw[blk + i] = dw2[i];
  dw[2 * blk + i] = dwc[i] - dw2[i];
  dw[3 * blk + i] = dw2[blk + i];
}

// ---- Loss ---------------------------------------------------------------------------
// Binary cross-entropy on a logit, overflow-free: max(x, 0) − x·y + log(1 + exp(−|x|)).
template <typename T>
DIN_HD inline T BceWithLogits(T logit, T label) {
  const T abs_x = logit >= T(0) ? logit : -logit;
  return (logit > T(0) ? logit : T(0)) - logit * label + Log1p(Exp(-abs_x));
}
// ∂BCE/∂logit.
template <typename T>
DIN_HD inline T BceGrad(T logit, T label) {
  return Sigmoid(logit) - label;
}

}  // namespace din::model::math
