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

// Row-parallelism: work is split into contiguous row chunks, one per thread (Eigen's
// thread count, see CpuBackend), each chunk running single-threaded Eigen GEMMs and
// vectorised loops; column reductions combine per-chunk partial sums in chunk order,
// so results are deterministic for a given thread count. Small work stays serial.
constexpr size_t kParallelWork = 1 << 15;

int Chunks(int n, size_t work) {
  const int threads = Eigen::nbThreads();
  return threads > 1 && work >= kParallelWork ? std::min(threads, std::max(n, 1)) : 1;
}

// f(chunk, first_row, end_row) for every chunk, in parallel when chunks > 1.
template <typename F>
void ForChunks(int chunks, int n, const F& f) {
  if (chunks <= 1) {
    f(0, 0, n);
    return;
  }
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c)
    f(c, static_cast<int>(static_cast<int64_t>(n) * c / chunks),
      static_cast<int>(static_cast<int64_t>(n) * (c + 1) / chunks));
}

// out[j] = Σ_c partial[c * width + j].
template <typename T>
void SumPartials(const T* partial, int chunks, int width, T* out) {
  for (int j = 0; j < width; ++j) out[j] = partial[j];
  for (int c = 1; c < chunks; ++c)
    for (int j = 0; j < width; ++j) out[j] += partial[static_cast<size_t>(c) * width + j];
}

}  // namespace

template <typename T>
double ActivationForward(Act act, Mode mode, int n, int k, const T* s, const T* alpha,
                         T* running_mean, T* running_var, T momentum, T eps, T* y, T* p, T* mean,
                         T* inv_std, BatchStatsSync* sync) {
  const bool synced = sync != nullptr && act == Act::kDice && mode == Mode::kTrain;
  if (n == 0 && !synced) return 0;
  const int chunks = std::max(1, Chunks(n, static_cast<size_t>(n) * k));
  if (act != Act::kDice) {
    ForChunks(chunks, n, [&](int, int r0, int r1) {
      for (int r = r0; r < r1; ++r) {
        const size_t o = static_cast<size_t>(r) * k;
#pragma omp simd
        for (int j = 0; j < k; ++j)
          y[o + j] = math::PointwiseForward(act, s[o + j], alpha != nullptr ? alpha[j] : T(0));
      }
    });
    return n;
  }
  double rows = n;
  if (mode == Mode::kTrain) {
    // Two passes (mean, then centred squares) for accuracy.
    thread_local std::vector<T> partial_buf;
    T* partial = Scratch(partial_buf, static_cast<size_t>(chunks) * k);
    ForChunks(chunks, n, [&](int c, int r0, int r1) {
      T* acc = partial + static_cast<size_t>(c) * k;
      std::fill(acc, acc + k, T(0));
      for (int r = r0; r < r1; ++r) {
        const T* sr = s + static_cast<size_t>(r) * k;
#pragma omp simd
        for (int j = 0; j < k; ++j) acc[j] += sr[j];
      }
    });
    SumPartials(partial, chunks, k, mean);
    if (n == 0) std::fill(mean, mean + k, T(0));
    // Synced: one reduction per layer. Each worker sends [Σs | M2 + (Σs)²/n | n] with
    // M2 its own centred sum of squares (two passes, as below); the global centred sum is
    // Σ(M2 + (Σs)²/n) - (ΣΣs)²/N (the parallel-variance identity), all in double.
    thread_local std::vector<double> sums;
    if (synced) {
      sums.assign(2 * static_cast<size_t>(k) + 1, 0.0);
      for (int j = 0; j < k; ++j) sums[j] = static_cast<double>(mean[j]);
      sums[2 * k] = n;
    }
    for (int j = 0; j < k; ++j) mean[j] = n > 0 ? mean[j] / T(n) : T(0);
    ForChunks(chunks, n, [&](int c, int r0, int r1) {
      T* acc = partial + static_cast<size_t>(c) * k;
      std::fill(acc, acc + k, T(0));
      for (int r = r0; r < r1; ++r) {
        const T* sr = s + static_cast<size_t>(r) * k;
#pragma omp simd
        for (int j = 0; j < k; ++j) acc[j] += (sr[j] - mean[j]) * (sr[j] - mean[j]);
      }
    });
    T* var = inv_std;  // the variance, turned into inv_std below
    SumPartials(partial, chunks, k, var);
    if (n == 0) std::fill(var, var + k, T(0));
    if (synced) {
      for (int j = 0; j < k; ++j)
        sums[k + j] = static_cast<double>(var[j]) + (n > 0 ? sums[j] * sums[j] / n : 0.0);
      sync->SumOverWorkers(sums);
      rows = sums[2 * k];
      for (int j = 0; j < k; ++j) {
        const double m = rows > 0 ? sums[j] / rows : 0.0;
        mean[j] = static_cast<T>(m);
        var[j] = static_cast<T>(std::max(0.0, sums[k + j] - m * sums[j]));
      }
    }
    const T rows_t = static_cast<T>(std::max(rows, 1.0));
    for (int j = 0; j < k; ++j) {
      const T biased = var[j] / rows_t;
      if (running_mean != nullptr && rows > 0) {
        const T unbiased = rows > 1 ? biased * rows_t / (rows_t - T(1)) : biased;
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
  if (n == 0) return rows;
  ForChunks(chunks, n, [&](int, int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
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
  });
  return rows;
}

template <typename T>
void ActivationBackward(Act act, bool batch_stats, int n, int k, const T* s, const T* y, const T* p,
                        const T* mean, const T* inv_std, const T* alpha, T* grad, T* dalpha,
                        BatchStatsSync* sync, double global_rows, double samples) {
  if (HasAlpha(act)) std::fill(dalpha, dalpha + k, T(0));
  const bool synced = sync != nullptr && act == Act::kDice && batch_stats;
  if (n == 0 && !synced) return;
  const int chunks = std::max(1, Chunks(n, static_cast<size_t>(n) * k));
  // Per chunk: [dα | Σ dx̂ | Σ dx̂·x̂].
  thread_local std::vector<T> partial_buf, sums_buf, dxhat_buf;
  T* partial = Scratch(partial_buf, static_cast<size_t>(chunks) * 3 * k);
  T* sums = Scratch(sums_buf, 3 * static_cast<size_t>(k));
  if (act != Act::kDice) {
    ForChunks(chunks, n, [&](int c, int r0, int r1) {
      T* da_acc = partial + static_cast<size_t>(c) * k;
      std::fill(da_acc, da_acc + k, T(0));
      for (int r = r0; r < r1; ++r) {
        const size_t o = static_cast<size_t>(r) * k;
#pragma omp simd
        for (int j = 0; j < k; ++j) {
          T da;
          grad[o + j] = math::PointwiseBackward(act, grad[o + j], s[o + j], y[o + j],
                                                alpha != nullptr ? alpha[j] : T(0), &da);
          da_acc[j] += da;
        }
      }
    });
    if (dalpha != nullptr) SumPartials(partial, chunks, k, dalpha);
    return;
  }
  T* dxhat = Scratch(dxhat_buf, static_cast<size_t>(n) * k);
  ForChunks(chunks, n, [&](int c, int r0, int r1) {
    T* acc = partial + static_cast<size_t>(c) * 3 * k;
    std::fill(acc, acc + 3 * k, T(0));
    for (int r = r0; r < r1; ++r) {
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
        acc[j] += da;
        acc[k + j] += dx;
        acc[2 * k + j] += dx * xhat;
      }
    }
  });
  SumPartials(partial, chunks, 3 * k, sums);
  if (n == 0) std::fill(sums, sums + 3 * k, T(0));
  std::copy(sums, sums + k, dalpha);
  const T* mean_dxhat = sums + k;
  const T* mean_dxhat_xhat = sums + 2 * k;
  if (synced && batch_stats) {
    // This worker's gradients are of its own mean loss (scale 1/samples). In that scale
    // the terms through the statistics are (1/samples) * mean over all rows of the
    // unscaled per-row gradients, summed over the workers as samples * local sums.
    thread_local std::vector<double> red;
    red.assign(2 * static_cast<size_t>(k), 0.0);
    for (int j = 0; j < 2 * k; ++j) red[j] = static_cast<double>(sums[k + j]) * samples;
    sync->SumOverWorkers(red);
    const double scale = global_rows > 0 && samples > 0 ? 1.0 / (global_rows * samples) : 0.0;
    for (int j = 0; j < 2 * k; ++j) sums[k + j] = static_cast<T>(red[j] * scale);
  } else {
    for (int j = k; j < 3 * k; ++j) sums[j] /= T(n);
  }
  if (n == 0) return;
  ForChunks(chunks, n, [&](int, int r0, int r1) {
    for (int r = r0; r < r1; ++r) {
      const size_t o = static_cast<size_t>(r) * k;
      const T* sr = s + o;
      const T* dr = dxhat + o;
      T* gr = grad + o;
      if (batch_stats) {
#pragma omp simd
        for (int j = 0; j < k; ++j) {
          const T xhat = (sr[j] - mean[j]) * inv_std[j];
          gr[j] +=
              math::BatchNormInputGrad(dr[j], xhat, mean_dxhat[j], mean_dxhat_xhat[j], inv_std[j]);
        }
      } else {
#pragma omp simd
        for (int j = 0; j < k; ++j) gr[j] += inv_std[j] * dr[j];
      }
    }
  });
}

template <typename T>
void CpuMlp<T>::Forward(std::span<const LayerSpec> layers, const T* params, T* running, T momentum,
                        T eps, Mode mode, bool update_running, const T* x, int n,
                        const FirstLayerInput<T>* first) {
  bufs_.resize(layers.size());
  mode_ = mode;
  first_ = first;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    Buffers& b = bufs_[i];
    const T* in = i == 0 ? x : bufs_[i - 1].y.data();
    const FirstLayerInput<T>* f = i == 0 ? first : nullptr;
    const int in_w = f != nullptr ? f->in : l.in;
    const size_t size = static_cast<size_t>(n) * l.out;
    b.s.resize(size);
    b.y.resize(size);
    ConstMatMap<T> w(f != nullptr ? f->weight : params + l.weight, in_w, l.out);
    ForChunks(Chunks(n, size * in_w / 16), n, [&](int, int r0, int r1) {
      MatMap<T> s(b.s.data() + static_cast<size_t>(r0) * l.out, r1 - r0, l.out);
      // Bias first, then accumulate the product (saves Eigen zeroing the destination).
      if (f != nullptr) {
        for (int r = r0; r < r1; ++r)
          s.row(r - r0) =
              ConstRowVecMap<T>(f->row_bias + static_cast<size_t>(f->row_group[r]) * l.out, l.out);
      } else {
        s.rowwise() = ConstRowVecMap<T>(params + l.bias, l.out);
      }
      s.noalias() += ConstMatMap<T>(in + static_cast<size_t>(r0) * in_w, r1 - r0, in_w) * w;
    });
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
    b.global_rows = ActivationForward<T>(l.act, mode, n, l.out, b.s.data(),
                                         HasAlpha(l.act) ? params + l.alpha : nullptr, rmean, rvar,
                                         momentum, eps, b.y.data(), b.p.data(), b.mean.data(),
                                         b.inv_std.data(), mode == Mode::kTrain ? sync_ : nullptr);
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
    const FirstLayerInput<T>* f = i == 0 ? first_ : nullptr;
    const int in_w = f != nullptr ? f->in : l.in;
    if (l.act != Act::kNone)
      ActivationBackward<T>(
          l.act, mode_ == Mode::kTrain, n, l.out, b.s.data(), b.y.data(), b.p.data(), b.mean.data(),
          b.inv_std.data(), HasAlpha(l.act) ? params + l.alpha : nullptr, cur,
          HasAlpha(l.act) ? grads + l.alpha : nullptr, sync_, b.global_rows, samples_);
    // Per chunk: dW_c = x_cᵀ·dS_c and db_c (chunk 0 straight into grads, the others
    // into partials added afterwards), dx_c = dS_c·Wᵀ. A FirstLayerInput's weight
    // gradient goes to its dweight, and its bias is the caller's.
    const size_t wsize = static_cast<size_t>(in_w) * l.out + l.out;
    const int chunks = Chunks(n, static_cast<size_t>(n) * l.out * in_w / 16);
    T* partial = Scratch(partial_, static_cast<size_t>(chunks) * wsize);
    ConstMatMap<T> w(f != nullptr ? f->weight : params + l.weight, in_w, l.out);
    T* dweight = f != nullptr ? f->dweight : grads + l.weight;
    T* dprev = i > 0 ? next : dx;
    ForChunks(chunks, n, [&](int c, int r0, int r1) {
      ConstMatMap<T> ds(cur + static_cast<size_t>(r0) * l.out, r1 - r0, l.out);
      T* dw = c == 0 ? dweight : partial + static_cast<size_t>(c) * wsize;
      T* db = c == 0 && f == nullptr ? grads + l.bias : dw + static_cast<size_t>(in_w) * l.out;
      MatMap<T>(dw, in_w, l.out).noalias() =
          ConstMatMap<T>(in + static_cast<size_t>(r0) * in_w, r1 - r0, in_w).transpose() * ds;
      if (f == nullptr) RowVecMap<T>(db, l.out) = ds.colwise().sum();
      if (dprev != nullptr)
        MatMap<T>(dprev + static_cast<size_t>(r0) * in_w, r1 - r0, in_w).noalias() =
            ds * w.transpose();
    });
    for (int c = 1; c < chunks; ++c) {
      const T* dw = partial + static_cast<size_t>(c) * wsize;
      const T* db = dw + static_cast<size_t>(in_w) * l.out;
      for (size_t e = 0; e < static_cast<size_t>(in_w) * l.out; ++e) dweight[e] += dw[e];
      if (f == nullptr)
        for (int j = 0; j < l.out; ++j) grads[l.bias + j] += db[j];
    }
    if (i > 0) std::swap(cur, next);
  }
  first_grad_ = cur;
}

template <typename T>
void CpuAttentionUnit<T>::Forward(std::span<const LayerSpec> layers, const T* params, T* running,
                                  T momentum, T eps, Mode mode, bool update_running, const T* va,
                                  const T* e, const int32_t* pos_sample, int batch, int n, int d) {
  const LayerSpec& l0 = layers[0];
  CHECK_EQ(l0.in, 4 * d);
  const int out = l0.out;
  va_ = va;
  e_ = e;
  pos_sample_ = pos_sample;
  batch_ = batch;
  n_ = n;
  d_ = d;
  // The fused weights, once per call.
  const size_t blk = static_cast<size_t>(d) * out;
  wc_.resize(blk);
  w2_.resize(2 * blk);
  for (size_t i = 0; i < blk; ++i)
    math::FuseAttentionWeight(params + l0.weight, d, out, i, wc_.data(), w2_.data());
  // The candidate share v_a·(W_a + W_d) + b, once per sample.
  cand_.resize(static_cast<size_t>(batch) * out);
  {
    MatMap<T> cand(cand_.data(), batch, out);
    cand.rowwise() = ConstRowVecMap<T>(params + l0.bias, out);
    cand.noalias() += ConstMatMap<T>(va, batch, d) * ConstMatMap<T>(wc_.data(), d, out);
  }
  // Per position [e, v_a ⊙ e].
  x2_.resize(static_cast<size_t>(n) * 2 * d);
  for (int p = 0; p < n; ++p) {
    const T* a = va + static_cast<size_t>(pos_sample[p]) * d;
    const T* ep = e + static_cast<size_t>(p) * d;
    T* row = &x2_[static_cast<size_t>(p) * 2 * d];
    for (int k = 0; k < d; ++k) math::PositionInput(a[k], ep[k], row, k, d);
  }
  first_ = FirstLayerInput<T>{w2_.data(), 2 * d, cand_.data(), pos_sample, nullptr};
  mlp_.Forward(layers, params, running, momentum, eps, mode, update_running, x2_.data(), n,
               &first_);
}

template <typename T>
void CpuAttentionUnit<T>::Backward(std::span<const LayerSpec> layers, const T* params,
                                   const T* dout, T* grads, T* dva, T* de) {
  const LayerSpec& l0 = layers[0];
  const int out = l0.out, d = d_, n = n_, batch = batch_;
  const size_t blk = static_cast<size_t>(d) * out;
  dw2_.resize(2 * blk);
  dx2_.resize(static_cast<size_t>(n) * 2 * d);
  first_.dweight = dw2_.data();
  mlp_.Backward(layers, params, x2_.data(), n, dout, grads, dx2_.data());
  // The candidate share's gradient: per sample the sum over its positions.
  const T* ds = mlp_.first_grad();
  dcand_.assign(static_cast<size_t>(batch) * out, T(0));
  for (int p = 0; p < n; ++p) {
    const T* g = ds + static_cast<size_t>(p) * out;
    T* acc = &dcand_[static_cast<size_t>(pos_sample_[p]) * out];
#pragma omp simd
    for (int j = 0; j < out; ++j) acc[j] += g[j];
  }
  ConstMatMap<T> dcand(dcand_.data(), batch, out);
  RowVecMap<T>(grads + l0.bias, out) = dcand.colwise().sum();
  dwc_.resize(blk);
  MatMap<T>(dwc_.data(), d, out).noalias() = ConstMatMap<T>(va_, batch, d).transpose() * dcand;
  for (size_t i = 0; i < blk; ++i)
    math::SplitAttentionWeightGrad(dwc_.data(), dw2_.data(), d, out, i, grads + l0.weight);
  // ∂v_a: the candidate share's dcand·(W_a + W_d)ᵀ plus every position's share of v_a ⊙ e.
  MatMap<T>(dva, batch, d).noalias() += dcand * ConstMatMap<T>(wc_.data(), d, out).transpose();
  for (int p = 0; p < n; ++p) {
    const size_t ob = static_cast<size_t>(pos_sample_[p]) * d, on = static_cast<size_t>(p) * d;
    const T* drow = &dx2_[static_cast<size_t>(p) * 2 * d];
    for (int k = 0; k < d; ++k) {
      T g_va, g_e;
      math::PositionInputBackward(drow, k, d, va_[ob + k], e_[on + k], &g_va, &g_e);
      dva[ob + k] += g_va;
      de[on + k] += g_e;
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

  // With a BatchStatsSync every worker takes part in the Dice sums of every layer, also
  // with no history positions or no samples at all.
  BatchStatsSync* sync = mode == Mode::kTrain ? sync_ : nullptr;
  att_.set_sync(sync, B);
  top_.set_sync(sync, B);

  // Pooling weights.
  weights_.resize(N);
  if (lay.pooling() == Pooling::kAttention) {
    if (N > 0 || sync != nullptr) {
      att_.Forward(lay.attention(), params, running, momentum, eps, mode, update_running,
                   va_.data(), e_.data(), plan.pos_sample.data(), B, N, D);
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
  if (B == 0 && sync_ == nullptr) return;

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

  if (lay.pooling() == Pooling::kAttention && (N > 0 || sync_ != nullptr)) {
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
    att_.Backward(lay.attention(), params, dw_.data(), grads, dva_.data(), de_.data());
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
  template double ActivationForward<T>(Act, Mode, int, int, const T*, const T*, T*, T*, T, T, T*,  \
                                       T*, T*, T*, BatchStatsSync*);                               \
  template void ActivationBackward<T>(Act, bool, int, int, const T*, const T*, const T*, const T*, \
                                      const T*, const T*, T*, T*, BatchStatsSync*, double,         \
                                      double);                                                     \
  template class CpuMlp<T>;                                                                        \
  template class CpuAttentionUnit<T>;                                                              \
  template class CpuEngine<T>;

DIN_INSTANTIATE(float)
DIN_INSTANTIATE(double)

}  // namespace din::model
