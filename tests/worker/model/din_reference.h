// An independent DIN forward pass in double precision, written from the model's
// definition (docs/design.md "The model") with plain loops and no code from the
// backends: no ModelLayout, no model_math.h, no CpuEngine. Tests feed it a few samples
// spelled out as vectors and compare a backend's logits with it; a backend that builds
// the activation unit's input, the pooling, the top MLP's input or Dice differently
// disagrees with it.
//
// The model, per sample with candidate item v_a (the item fields' rows concatenated) and
// behaviours e_1..e_H (oldest first; only the newest max_history are kept):
//   w_j = MLP_att([v_a, e_j, v_a − e_j, v_a ⊙ e_j])          (ATTENTION; SUM: w_j = 1;
//                                                             MEAN: w_j = 1/H_kept)
//   u   = Σ_j w_j · e_j
//   z   = [Σ user rows per user field…, u, v_a, u ⊙ v_a, other candidate rows…,
//          Σ context rows per context field…]
//   logit = MLP_top(z)
// Every hidden layer is y = Dice(x·W + b) with
//   Dice(s) = p·s + (1 − p)·α·s,  p = sigmoid((s − E[s]) / sqrt(Var[s] + ε)),
// E and Var the biased batch statistics per unit in training (over the valid behaviour
// positions of the whole batch for the activation unit, over the samples for the top
// MLP) and the running statistics in evaluation. The output layer is linear.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace din::model::test::reference {

// One layer: W is [in x out] row-major (y_k = Σ_i x_i·W[i·out + k] + b_k).
struct Layer {
  int in = 0;
  int out = 0;
  std::vector<double> w, b;
  std::vector<double> alpha;                      // Dice layers only ([out])
  std::vector<double> running_mean, running_var;  // Dice layers only ([out])
  bool dice() const { return !alpha.empty(); }
};

struct Weights {
  std::vector<Layer> attention;  // empty for SUM and MEAN pooling
  std::vector<Layer> top;
};

// A multi-valued field of one sample: its rows, summed (none: dim zeros).
struct Bag {
  int dim = 0;
  std::vector<std::vector<double>> rows;
};

// One sample: every row as its embedding values.
struct Sample {
  std::vector<Bag> user;                             // per user field
  std::vector<double> candidate_item;                // v_a
  std::vector<std::vector<double>> history;          // e_1..e_H, oldest first
  std::vector<std::vector<double>> other_candidate;  // candidate fields outside the item
  std::vector<Bag> context;                          // per context field
};

enum class Pool { kAttention, kSum, kMean };

struct Options {
  Pool pooling = Pool::kAttention;
  int max_history = 50;
  bool train = true;  // batch statistics (true) or running statistics (false)
  double epsilon = 1e-8;
};

inline double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Applies one layer to the rows x (each of size layer.in).
inline std::vector<std::vector<double>> ApplyLayer(const Layer& l,
                                                   const std::vector<std::vector<double>>& x,
                                                   const Options& o) {
  const size_t n = x.size();
  std::vector<std::vector<double>> s(n, std::vector<double>(l.out, 0.0));
  for (size_t r = 0; r < n; ++r)
    for (int k = 0; k < l.out; ++k) {
      double acc = l.b[k];
      for (int i = 0; i < l.in; ++i) acc += x[r][i] * l.w[static_cast<size_t>(i) * l.out + k];
      s[r][k] = acc;
    }
  if (!l.dice()) return s;
  for (int k = 0; k < l.out; ++k) {
    double mean = 0, var = 0;
    if (o.train) {
      for (size_t r = 0; r < n; ++r) mean += s[r][k];
      mean = n > 0 ? mean / static_cast<double>(n) : 0.0;
      for (size_t r = 0; r < n; ++r) var += (s[r][k] - mean) * (s[r][k] - mean);
      var = n > 0 ? var / static_cast<double>(n) : 0.0;
    } else {
      mean = l.running_mean[k];
      var = l.running_var[k];
    }
    for (size_t r = 0; r < n; ++r) {
      const double v = s[r][k];
      const double p = Sigmoid((v - mean) / std::sqrt(var + o.epsilon));
      s[r][k] = p * v + (1 - p) * l.alpha[k] * v;
    }
  }
  return s;
}

inline std::vector<std::vector<double>> ApplyMlp(const std::vector<Layer>& mlp,
                                                 std::vector<std::vector<double>> x,
                                                 const Options& o) {
  for (const Layer& l : mlp) x = ApplyLayer(l, x, o);
  return x;
}

// The logits of a batch.
inline std::vector<double> Logits(const std::vector<Sample>& batch, const Weights& w,
                                  const Options& o) {
  // The kept behaviours: the newest max_history of each sample.
  std::vector<std::vector<std::vector<double>>> kept(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const auto& h = batch[b].history;
    const size_t first =
        h.size() > static_cast<size_t>(o.max_history) ? h.size() - o.max_history : 0;
    kept[b].assign(h.begin() + static_cast<std::ptrdiff_t>(first), h.end());
  }
  // Pooling weights, sample after sample (the activation unit's batch statistics run
  // over all kept positions of the batch).
  std::vector<std::vector<double>> weights(batch.size());
  if (o.pooling == Pool::kAttention) {
    std::vector<std::vector<double>> rows;
    for (size_t b = 0; b < batch.size(); ++b) {
      const auto& va = batch[b].candidate_item;
      for (const auto& e : kept[b]) {
        std::vector<double> x;
        for (double v : va) x.push_back(v);
        for (double v : e) x.push_back(v);
        for (size_t k = 0; k < va.size(); ++k) x.push_back(va[k] - e[k]);
        for (size_t k = 0; k < va.size(); ++k) x.push_back(va[k] * e[k]);
        rows.push_back(x);
      }
    }
    const auto out = ApplyMlp(w.attention, rows, o);
    size_t next = 0;
    for (size_t b = 0; b < batch.size(); ++b)
      for (size_t j = 0; j < kept[b].size(); ++j) weights[b].push_back(out[next++][0]);
  } else {
    for (size_t b = 0; b < batch.size(); ++b)
      weights[b].assign(kept[b].size(),
                        o.pooling == Pool::kSum ? 1.0 : 1.0 / static_cast<double>(kept[b].size()));
  }
  auto sum_rows = [](const Bag& bag, std::vector<double>* z) {
    std::vector<double> s(static_cast<size_t>(bag.dim), 0.0);
    for (const auto& r : bag.rows)
      for (size_t k = 0; k < s.size(); ++k) s[k] += r[k];
    z->insert(z->end(), s.begin(), s.end());
  };
  std::vector<std::vector<double>> z(batch.size());
  for (size_t b = 0; b < batch.size(); ++b) {
    const Sample& s = batch[b];
    const size_t d = s.candidate_item.size();
    for (const Bag& bag : s.user) sum_rows(bag, &z[b]);
    std::vector<double> u(d, 0.0);
    for (size_t j = 0; j < kept[b].size(); ++j)
      for (size_t k = 0; k < d; ++k) u[k] += weights[b][j] * kept[b][j][k];
    for (size_t k = 0; k < d; ++k) z[b].push_back(u[k]);
    for (size_t k = 0; k < d; ++k) z[b].push_back(s.candidate_item[k]);
    for (size_t k = 0; k < d; ++k) z[b].push_back(u[k] * s.candidate_item[k]);
    for (const auto& c : s.other_candidate) z[b].insert(z[b].end(), c.begin(), c.end());
    for (const Bag& bag : s.context) sum_rows(bag, &z[b]);
  }
  const auto out = ApplyMlp(w.top, z, o);
  std::vector<double> logits;
  for (const auto& r : out) logits.push_back(r[0]);
  return logits;
}

// Mean binary cross-entropy of the logits against 0/1 labels.
inline double MeanLogLoss(const std::vector<double>& logits, const std::vector<double>& labels) {
  double sum = 0;
  for (size_t b = 0; b < logits.size(); ++b) {
    const double p = Sigmoid(logits[b]);
    sum += labels[b] > 0.5 ? -std::log(p) : -std::log(1 - p);
  }
  return sum / static_cast<double>(logits.size());
}

}  // namespace din::model::test::reference
