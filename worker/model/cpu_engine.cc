#include "worker/model/cpu_engine.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <glog/logging.h>
#include <Eigen/Core>

namespace din::model {
namespace {

using math::Act;

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<RowMat<T>>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMat<T>>;
template <typename T>
using RowVecMap = Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>;
template <typename T>
using ConstRowVecMap = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>;

bool HasAlpha(Act act) { return act == Act::kDice || act == Act::kPRelu; }

// Scratch that grows to the largest request and is never shrunk (no per-batch churn).
template <typename T>
T* Scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

template <typename T>
void ActivationForward(Act act, Mode mode, int n, int k, const T* s, const T* alpha,
                       T* running_mean, T* running_var, T momentum, T eps, T* y, T* p, T* mean,
                       T* inv_std) {
  if (n == 0) return;
  if (act != Act::kDice) {
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {
        const size_t i = static_cast<size_t>(r) * k + j;
        y[i] = math::PointwiseForward(act, s[i], alpha != nullptr ? alpha[j] : T(0));
      }
    return;
  }
  if (mode == Mode::kTrain) {
    // Two passes (mean, then centred squares) for accuracy.
    std::fill(mean, mean + k, T(0));
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) mean[j] += s[static_cast<size_t>(r) * k + j];
    for (int j = 0; j < k; ++j) mean[j] /= T(n);
    T* var = inv_std;  // accumulate the variance in place
    std::fill(var, var + k, T(0));
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {
        const T d = s[static_cast<size_t>(r) * k + j] - mean[j];
        var[j] += d * d;
      }
    for (int j = 0; j < k; ++j) {
      const T biased = var[j] / T(n);
      if (running_mean != nullptr) {
        const T unbiased = n > 1 ? biased * T(n) / T(n - 1) : biased;
        running_mean[j] = math::RunningUpdate(running_mean[j], mean[j], momentum);
        running_var[j] = math::RunningUpdate(running_var[j], unbiased, momentum);
      }
      inv_std[j] = math::InvStd(biased, eps);
    }
  } else {
    CHECK(running_mean != nullptr && running_var != nullptr) << "Dice evaluation needs stats";
    for (int j = 0; j < k; ++j) {
      mean[j] = running_mean[j];
      inv_std[j] = math::InvStd(running_var[j], eps);
    }
  }
  for (int r = 0; r < n; ++r) {
    const size_t o = static_cast<size_t>(r) * k;
    const T* sr = s + o;
    T* pr = p + o;
    T* yr = y + o;
#pragma omp simd
    for (int j = 0; j < k; ++j) {
      const T pj = math::Sigmoid((sr[j] - mean[j]) * inv_std[j]);
      pr[j] = pj;
      yr[j] = math::DiceForward(sr[j], pj, alpha[j]);
    }
  }
}

template <typename T>
void ActivationBackward(Act act, bool batch_stats, int n, int k, const T* s, const T* y, const T* p,
                        const T* mean, const T* inv_std, const T* alpha, T* grad, T* dalpha) {
  if (HasAlpha(act)) std::fill(dalpha, dalpha + k, T(0));
  if (n == 0) return;
  if (act != Act::kDice) {
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < k; ++j) {
        const size_t i = static_cast<size_t>(r) * k + j;
        T da;
        grad[i] = math::PointwiseBackward(act, grad[i], s[i], y[i],
                                          alpha != nullptr ? alpha[j] : T(0), &da);
        if (dalpha != nullptr) dalpha[j] += da;
      }
    return;
  }
  thread_local std::vector<T> dxhat_buf, sums_buf;
  T* dxhat = Scratch(dxhat_buf, static_cast<size_t>(n) * k);
  T* sum_dxhat = Scratch(sums_buf, 2 * static_cast<size_t>(k));
  T* sum_dxhat_xhat = sum_dxhat + k;
  std::fill(sum_dxhat, sum_dxhat + 2 * k, T(0));
  for (int r = 0; r < n; ++r) {
    const size_t o = static_cast<size_t>(r) * k;
    const T* sr = s + o;
    const T* pr = p + o;
    T* gr = grad + o;
    T* dr = dxhat + o;
#pragma omp simd
    for (int j = 0; j < k; ++j) {
      const T xhat = (sr[j] - mean[j]) * inv_std[j];
      T da, dx;
      gr[j] = math::DiceBackward(gr[j], sr[j], pr[j], alpha[j], &dx, &da);
      dr[j] = dx;
      dalpha[j] += da;
      sum_dxhat[j] += dx;
      sum_dxhat_xhat[j] += dx * xhat;
    }
  }
  for (int j = 0; j < k; ++j) {
    sum_dxhat[j] /= T(n);
    sum_dxhat_xhat[j] /= T(n);
  }
  for (int r = 0; r < n; ++r) {
    const size_t o = static_cast<size_t>(r) * k;
    const T* sr = s + o;
    const T* dr = dxhat + o;
    T* gr = grad + o;
    if (batch_stats) {
#pragma omp simd
      for (int j = 0; j < k; ++j) {
        const T xhat = (sr[j] - mean[j]) * inv_std[j];
        gr[j] += math::BatchNormInputGrad(dr[j], xhat, sum_dxhat[j], sum_dxhat_xhat[j], inv_std[j]);
      }
    } else {
#pragma omp simd
      for (int j = 0; j < k; ++j) gr[j] += inv_std[j] * dr[j];
    }
  }
}

template <typename T>
void CpuMlp<T>::Forward(std::span<const LayerSpec> layers, const T* params, T* running, T momentum,
                        T eps, Mode mode, bool update_running, const T* x, int n) {
  bufs_.resize(layers.size());
  mode_ = mode;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    Buffers& b = bufs_[i];
    const T* in = i == 0 ? x : bufs_[i - 1].y.data();
    const size_t size = static_cast<size_t>(n) * l.out;
    b.s.resize(size);
    b.y.resize(size);
    MatMap<T> s(b.s.data(), n, l.out);
    // Bias first, then accumulate the product (saves Eigen zeroing the destination).
    s.rowwise() = ConstRowVecMap<T>(params + l.bias, l.out);
    s.noalias() += ConstMatMap<T>(in, n, l.in) * ConstMatMap<T>(params + l.weight, l.in, l.out);
    if (l.act == Act::kNone) {
      std::copy(b.s.begin(), b.s.end(), b.y.begin());
      continue;
    }
    T* rmean = nullptr;
    T* rvar = nullptr;
    if (l.act == Act::kDice) {
      b.p.resize(size);
      b.mean.resize(l.out);
      b.inv_std.resize(l.out);
      if (mode == Mode::kEval || update_running) {
        rmean = running + l.running;
        rvar = rmean + l.out;
      }
    }
    ActivationForward<T>(l.act, mode, n, l.out, b.s.data(),
                         HasAlpha(l.act) ? params + l.alpha : nullptr, rmean, rvar, momentum, eps,
                         b.y.data(), b.p.data(), b.mean.data(), b.inv_std.data());
  }
}

template <typename T>
void CpuMlp<T>::Backward(std::span<const LayerSpec> layers, const T* params, const T* x, int n,
                         const T* dout, T* grads, T* dx) {
  CHECK_EQ(bufs_.size(), layers.size());
  size_t width = 0;
  for (const LayerSpec& l : layers) width = std::max<size_t>(width, std::max(l.in, l.out));
  T* cur = Scratch(g0_, width * n);
  T* next = Scratch(g1_, width * n);
  std::copy(dout, dout + static_cast<size_t>(n) * layers.back().out, cur);
  for (size_t i = layers.size(); i-- > 0;) {
    const LayerSpec& l = layers[i];
    const Buffers& b = bufs_[i];
    const T* in = i == 0 ? x : bufs_[i - 1].y.data();
    if (l.act != Act::kNone)
      ActivationBackward<T>(l.act, mode_ == Mode::kTrain, n, l.out, b.s.data(), b.y.data(),
                            b.p.data(), b.mean.data(), b.inv_std.data(),
                            HasAlpha(l.act) ? params + l.alpha : nullptr, cur,
                            HasAlpha(l.act) ? grads + l.alpha : nullptr);
    ConstMatMap<T> ds(cur, n, l.out);
    ConstMatMap<T> w(params + l.weight, l.in, l.out);
    MatMap<T>(grads + l.weight, l.in, l.out).noalias() =
        ConstMatMap<T>(in, n, l.in).transpose() * ds;
    RowVecMap<T>(grads + l.bias, l.out) = ds.colwise().sum();
    if (i > 0) {
      MatMap<T>(next, n, l.in).noalias() = ds * w.transpose();
      std::swap(cur, next);
    } else if (dx != nullptr) {
      MatMap<T>(dx, n, l.in).noalias() = ds * w.transpose();
    }
  }
}

template <typename T>
T CpuEngine<T>::Forward(const BatchPlan& plan, const ModelInput& input,
                        std::span<const T* const> tables, const T* params, T* running, Mode mode,
                        bool update_running, std::span<const float> labels) {
  const ModelLayout& lay = *layout_;
  const int B = plan.batch, N = plan.positions, D = lay.item_dim();
  const T momentum = static_cast<T>(lay.dice_momentum());
  const T eps = static_cast<T>(lay.dice_epsilon());

  // Gather v_a [B x D] and e [N x D].
  va_.resize(static_cast<size_t>(B) * D);
  e_.resize(static_cast<size_t>(N) * D);
  for (size_t i = 0; i < lay.item_fields().size(); ++i) {
    const int f = lay.item_fields()[i], col = lay.item_cols()[i];
    const int d = lay.field_dims().candidate[f];
    const T* table = tables[input.candidate_fields[f].table];
    for (int b = 0; b < B; ++b)
      std::memcpy(&va_[static_cast<size_t>(b) * D + col],
                  table + static_cast<size_t>(plan.cand_rows[i][b]) * d, d * sizeof(T));
    for (int n = 0; n < N; ++n)
      std::memcpy(&e_[static_cast<size_t>(n) * D + col],
                  table + static_cast<size_t>(plan.hist_rows[i][n]) * d, d * sizeof(T));
  }

  // Pooling weights.
  weights_.resize(N);
  if (lay.pooling() == Pooling::kAttention) {
    if (N > 0) {
      const int w4 = 4 * D;
      xatt_.resize(static_cast<size_t>(N) * w4);
      for (int n = 0; n < N; ++n) {
        const T* va = &va_[static_cast<size_t>(plan.pos_sample[n]) * D];
        const T* e = &e_[static_cast<size_t>(n) * D];
        T* row = &xatt_[static_cast<size_t>(n) * w4];
        for (int k = 0; k < D; ++k) math::AttentionInput(va[k], e[k], row, k, D);
      }
      att_.Forward(lay.attention(), params, running, momentum, eps, mode, update_running,
                   xatt_.data(), N);
      std::copy(att_.output(), att_.output() + N, weights_.begin());
      if (lay.softmax()) {
        for (int b = 0; b < B; ++b) {
          const int lo = plan.hist_offsets[b], hi = plan.hist_offsets[b + 1];
          if (lo == hi) continue;
          T mx = weights_[lo];
          for (int n = lo; n < hi; ++n) mx = std::max(mx, weights_[n]);
          T sum = 0;
          for (int n = lo; n < hi; ++n) sum += weights_[n] = math::Exp(weights_[n] - mx);
          for (int n = lo; n < hi; ++n) weights_[n] /= sum;
        }
      }
    }
  } else {
    for (int b = 0; b < B; ++b) {
      const int lo = plan.hist_offsets[b], hi = plan.hist_offsets[b + 1];
      const T w = lay.pooling() == Pooling::kSum ? T(1) : T(1) / T(std::max(hi - lo, 1));
      for (int n = lo; n < hi; ++n) weights_[n] = w;
    }
  }

  // u [B x D] = Σ_j w_j e_j per sample.
  u_.assign(static_cast<size_t>(B) * D, T(0));
  for (int b = 0; b < B; ++b) {
    T* u = &u_[static_cast<size_t>(b) * D];
    for (int n = plan.hist_offsets[b]; n < plan.hist_offsets[b + 1]; ++n) {
      const T w = weights_[n];
      const T* e = &e_[static_cast<size_t>(n) * D];
      for (int k = 0; k < D; ++k) u[k] += w * e[k];
    }
  }

  // Top input z [B x top_in].
  const int top_in = lay.top_in(), uc = lay.u_col();
  z_.assign(static_cast<size_t>(B) * top_in, T(0));
  for (const TopSegment& seg : lay.segments()) {
    const FieldRows& field = seg.group == TopSegment::Group::kUser ? input.user_fields[seg.field]
                             : seg.group == TopSegment::Group::kCandidate
                                 ? input.candidate_fields[seg.field]
                                 : input.context_fields[seg.field];
    const T* table = tables[field.table];
    for (int b = 0; b < B; ++b) {
      T* z = &z_[static_cast<size_t>(b) * top_in + seg.col];
      for (uint32_t o = field.offsets[b]; o < field.offsets[b + 1]; ++o) {
        const T* row = table + static_cast<size_t>(field.rows[o]) * seg.dim;
        for (int k = 0; k < seg.dim; ++k) z[k] += row[k];
      }
    }
  }
  for (int b = 0; b < B; ++b) {
    T* z = &z_[static_cast<size_t>(b) * top_in + uc];
    const T* u = &u_[static_cast<size_t>(b) * D];
    const T* va = &va_[static_cast<size_t>(b) * D];
    for (int k = 0; k < D; ++k) {
      z[k] = u[k];
      z[D + k] = va[k];
      z[2 * D + k] = u[k] * va[k];
    }
  }
  top_.Forward(lay.top(), params, running, momentum, eps, mode, update_running, z_.data(), B);
  logits_.assign(top_.output(), top_.output() + B);

  if (labels.empty() || B == 0) return T(0);
  CHECK_EQ(labels.size(), static_cast<size_t>(B));
  T loss = 0;
  for (int b = 0; b < B; ++b) loss += math::BceWithLogits(logits_[b], static_cast<T>(labels[b]));
  return loss / T(B);
}

template <typename T>
void CpuEngine<T>::Backward(const BatchPlan& plan, const ModelInput& input, const T* params,
                            std::span<const float> labels, T* grads,
                            std::span<T* const> table_grads) {
  const ModelLayout& lay = *layout_;
  const int B = plan.batch, N = plan.positions, D = lay.item_dim();
  const int top_in = lay.top_in(), uc = lay.u_col();
  CHECK_EQ(labels.size(), static_cast<size_t>(B));
  std::fill(grads, grads + lay.num_params(), T(0));
  for (size_t t = 0; t < input.tables.size(); ++t)
    std::fill(table_grads[t],
              table_grads[t] + static_cast<size_t>(input.tables[t].rows) * input.tables[t].dim,
              T(0));
  if (B == 0) return;

  dlogit_.resize(B);
  for (int b = 0; b < B; ++b)
    dlogit_[b] = math::BceGrad(logits_[b], static_cast<T>(labels[b])) / T(B);
  dz_.resize(static_cast<size_t>(B) * top_in);
  top_.Backward(lay.top(), params, z_.data(), B, dlogit_.data(), grads, dz_.data());

  for (const TopSegment& seg : lay.segments()) {
    const FieldRows& field = seg.group == TopSegment::Group::kUser ? input.user_fields[seg.field]
                             : seg.group == TopSegment::Group::kCandidate
                                 ? input.candidate_fields[seg.field]
                                 : input.context_fields[seg.field];
    T* tg = table_grads[field.table];
    for (int b = 0; b < B; ++b) {
      const T* dz = &dz_[static_cast<size_t>(b) * top_in + seg.col];
      for (uint32_t o = field.offsets[b]; o < field.offsets[b + 1]; ++o) {
        T* row = tg + static_cast<size_t>(field.rows[o]) * seg.dim;
        for (int k = 0; k < seg.dim; ++k) row[k] += dz[k];
      }
    }
  }

  du_.resize(static_cast<size_t>(B) * D);
  dva_.resize(static_cast<size_t>(B) * D);
  for (int b = 0; b < B; ++b) {
    const T* dz = &dz_[static_cast<size_t>(b) * top_in + uc];
    const size_t o = static_cast<size_t>(b) * D;
    for (int k = 0; k < D; ++k) {
      du_[o + k] = dz[k] + dz[2 * D + k] * va_[o + k];
      dva_[o + k] = dz[D + k] + dz[2 * D + k] * u_[o + k];
    }
  }
  de_.resize(static_cast<size_t>(N) * D);
  for (int n = 0; n < N; ++n) {
    const T* du = &du_[static_cast<size_t>(plan.pos_sample[n]) * D];
    T* de = &de_[static_cast<size_t>(n) * D];
    for (int k = 0; k < D; ++k) de[k] = weights_[n] * du[k];
  }

  if (lay.pooling() == Pooling::kAttention && N > 0) {
    dw_.resize(N);
    for (int n = 0; n < N; ++n) {
      const T* du = &du_[static_cast<size_t>(plan.pos_sample[n]) * D];
      const T* e = &e_[static_cast<size_t>(n) * D];
      T dot = 0;
      for (int k = 0; k < D; ++k) dot += du[k] * e[k];
      dw_[n] = dot;
    }
    if (lay.softmax()) {
      for (int b = 0; b < B; ++b) {
        T dot = 0;
        for (int n = plan.hist_offsets[b]; n < plan.hist_offsets[b + 1]; ++n)
          dot += weights_[n] * dw_[n];
        for (int n = plan.hist_offsets[b]; n < plan.hist_offsets[b + 1]; ++n)
          dw_[n] = weights_[n] * (dw_[n] - dot);
      }
    }
    const int w4 = 4 * D;
    dxatt_.resize(static_cast<size_t>(N) * w4);
    att_.Backward(lay.attention(), params, xatt_.data(), N, dw_.data(), grads, dxatt_.data());
    for (int n = 0; n < N; ++n) {
      const size_t ob = static_cast<size_t>(plan.pos_sample[n]) * D;
      const size_t on = static_cast<size_t>(n) * D;
      const T* drow = &dxatt_[static_cast<size_t>(n) * w4];
      for (int k = 0; k < D; ++k) {
        T dva, de;
        math::AttentionInputBackward(drow, k, D, va_[ob + k], e_[on + k], &dva, &de);
        dva_[ob + k] += dva;
        de_[on + k] += de;
      }
    }
  }

  for (size_t i = 0; i < lay.item_fields().size(); ++i) {
    const int f = lay.item_fields()[i], col = lay.item_cols()[i];
    const int d = lay.field_dims().candidate[f];
    T* tg = table_grads[input.candidate_fields[f].table];
    for (int b = 0; b < B; ++b) {
      T* row = tg + static_cast<size_t>(plan.cand_rows[i][b]) * d;
      const T* g = &dva_[static_cast<size_t>(b) * D + col];
      for (int k = 0; k < d; ++k) row[k] += g[k];
    }
    for (int n = 0; n < N; ++n) {
      T* row = tg + static_cast<size_t>(plan.hist_rows[i][n]) * d;
      const T* g = &de_[static_cast<size_t>(n) * D + col];
      for (int k = 0; k < d; ++k) row[k] += g[k];
    }
  }
}

#define DIN_INSTANTIATE(T)                                                                         \
  template void ActivationForward<T>(Act, Mode, int, int, const T*, const T*, T*, T*, T, T, T*,    \
                                     T*, T*, T*);                                                  \
  template void ActivationBackward<T>(Act, bool, int, int, const T*, const T*, const T*, const T*, \
                                      const T*, const T*, T*, T*);                                 \
  template class CpuMlp<T>;                                                                        \
  template class CpuEngine<T>;

DIN_INSTANTIATE(float)
DIN_INSTANTIATE(double)

}  // namespace din::model
