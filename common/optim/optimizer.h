// Sparse optimizers: applied by a server to the rows a push names, and only to those.
//
// A row keeps `dim` weights followed by StateFloats() floats of optimizer state. All
// optimizers are per-row and per-coordinate, so applying them to different rows is
// independent and the order of pushes of *different* rows never matters.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/proto/config.pb.h"

namespace din {

class SparseOptimizer {
 public:
  virtual ~SparseOptimizer() = default;

  // Floats of state per row for a table of width `dim`.
  virtual uint32_t StateFloats(uint32_t dim) const = 0;
  // Writes the initial state of a newly created row.
  virtual void InitState(float* state, uint32_t dim) const = 0;
  // Applies one gradient to one row: `weights` and `state` are updated in place.
  virtual void Apply(float* weights, float* state, const float* grad, uint32_t dim) const = 0;
  virtual std::string Name() const = 0;

  static std::unique_ptr<SparseOptimizer> Create(const config::OptimizerConfig& cfg);
};

// w -= lr * g
class SgdOptimizer final : public SparseOptimizer {
 public:
  explicit SgdOptimizer(const config::SgdConfig& cfg) : lr_(cfg.learning_rate()) {}
  uint32_t StateFloats(uint32_t) const override { return 0; }
  void InitState(float*, uint32_t) const override {}
  void Apply(float* w, float* state, const float* g, uint32_t dim) const override;
  std::string Name() const override { return "sgd"; }

 private:
  float lr_;
};

// acc += g^2;  w -= lr * g / (sqrt(acc) + eps);  acc starts at initial_accumulator.
class AdagradOptimizer final : public SparseOptimizer {
 public:
  explicit AdagradOptimizer(const config::AdagradConfig& cfg)
      : lr_(cfg.learning_rate()), init_(cfg.initial_accumulator()), eps_(cfg.epsilon()) {}
  uint32_t StateFloats(uint32_t dim) const override { return dim; }
  void InitState(float* state, uint32_t dim) const override;
  void Apply(float* w, float* state, const float* g, uint32_t dim) const override;
  std::string Name() const override { return "adagrad"; }

 private:
  float lr_, init_, eps_;
};

// Row-wise Adagrad (FBGEMM, TorchRec): one accumulator per row.
//   acc += mean_i(g_i^2);  w_i -= lr * g_i / (sqrt(acc) + eps);  acc starts at
//   initial_accumulator.
class RowwiseAdagradOptimizer final : public SparseOptimizer {
 public:
  explicit RowwiseAdagradOptimizer(const config::RowwiseAdagradConfig& cfg)
      : lr_(cfg.learning_rate()), init_(cfg.initial_accumulator()), eps_(cfg.epsilon()) {}
  uint32_t StateFloats(uint32_t) const override { return 1; }
  void InitState(float* state, uint32_t dim) const override;
  void Apply(float* w, float* state, const float* g, uint32_t dim) const override;
  std::string Name() const override { return "rowwise_adagrad"; }

 private:
  float lr_, init_, eps_;
};

// Lazy Adam. State: m[dim], v[dim], then the row's own step count t (a uint32 stored in
// the bits of one float). A push advances t by one and
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// Rows that are not pushed keep m, v and t untouched (no decay while absent).
class AdamOptimizer final : public SparseOptimizer {
 public:
  explicit AdamOptimizer(const config::AdamConfig& cfg)
      : lr_(cfg.learning_rate()), b1_(cfg.beta1()), b2_(cfg.beta2()), eps_(cfg.epsilon()) {}
  uint32_t StateFloats(uint32_t dim) const override { return 2 * dim + 1; }
  void InitState(float* state, uint32_t dim) const override;
  void Apply(float* w, float* state, const float* g, uint32_t dim) const override;
  std::string Name() const override { return "adam"; }

  static uint32_t StepOf(const float* state, uint32_t dim);

 private:
  float lr_, b1_, b2_, eps_;
};

// FTRL-Proximal (McMahan et al., KDD 2013), per coordinate. State: z[dim], n[dim].
//   sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma w;  n += g^2
//   w = 0 if |z| <= l1, else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2)
class FtrlOptimizer final : public SparseOptimizer {
 public:
  explicit FtrlOptimizer(const config::FtrlConfig& cfg)
      : alpha_(cfg.alpha()), beta_(cfg.beta()), l1_(cfg.l1()), l2_(cfg.l2()) {}
  uint32_t StateFloats(uint32_t dim) const override { return 2 * dim; }
  void InitState(float* state, uint32_t dim) const override;
  void Apply(float* w, float* state, const float* g, uint32_t dim) const override;
  std::string Name() const override { return "ftrl"; }

 private:
  float alpha_, beta_, l1_, l2_;
};

}  // namespace din
