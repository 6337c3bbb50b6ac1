#include "common/optim/optimizer.h"

#include <cmath>
#include <cstring>

#include <glog/logging.h>

namespace din {

std::unique_ptr<SparseOptimizer> SparseOptimizer::Create(const config::OptimizerConfig& cfg) {
  switch (cfg.kind_case()) {
    case config::OptimizerConfig::kSgd:
      return std::make_unique<SgdOptimizer>(cfg.sgd());
    case config::OptimizerConfig::kAdam:
      return std::make_unique<AdamOptimizer>(cfg.adam());
    case config::OptimizerConfig::kFtrl:
      return std::make_unique<FtrlOptimizer>(cfg.ftrl());
    case config::OptimizerConfig::kRowwiseAdagrad:
      return std::make_unique<RowwiseAdagradOptimizer>(cfg.rowwise_adagrad());
    case config::OptimizerConfig::kAdagrad:
    case config::OptimizerConfig::KIND_NOT_SET:
      return std::make_unique<AdagradOptimizer>(cfg.adagrad());
  }
  LOG(FATAL) << "unknown optimizer";
}

void SgdOptimizer::Apply(float* w, float*, const float* g, uint32_t dim) const {
  for (uint32_t i = 0; i < dim; ++i) w[i] -= lr_ * g[i];
}

void AdagradOptimizer::InitState(float* acc, uint32_t dim) const {
  for (uint32_t i = 0; i < dim; ++i) acc[i] = init_;
}

void AdagradOptimizer::Apply(float* w, float* acc, const float* g, uint32_t dim) const {
  for (uint32_t i = 0; i < dim; ++i) {
    acc[i] += g[i] * g[i];
    w[i] -= lr_ * g[i] / (std::sqrt(acc[i]) + eps_);
  }
}

void RowwiseAdagradOptimizer::InitState(float* acc, uint32_t) const { acc[0] = init_; }

void RowwiseAdagradOptimizer::Apply(float* w, float* acc, const float* g, uint32_t dim) const {
  float sum = 0.0f;
  for (uint32_t i = 0; i < dim; ++i) sum += g[i] * g[i];
  acc[0] += sum / static_cast<float>(dim);
  const float step = lr_ / (std::sqrt(acc[0]) + eps_);
  for (uint32_t i = 0; i < dim; ++i) w[i] -= step * g[i];
}

void AdamOptimizer::InitState(float* state, uint32_t dim) const {
  std::memset(state, 0, sizeof(float) * (2 * dim + 1));
}

uint32_t AdamOptimizer::StepOf(const float* state, uint32_t dim) {
  uint32_t t;
  std::memcpy(&t, state + 2 * dim, sizeof(t));
  return t;
}

void AdamOptimizer::Apply(float* w, float* state, const float* g, uint32_t dim) const {
  float* m = state;
  float* v = state + dim;
  uint32_t t = StepOf(state, dim);
  if (t != UINT32_MAX) ++t;
  std::memcpy(state + 2 * dim, &t, sizeof(t));
  // Bias corrections folded into the step size, as in Kingma & Ba §2.
  const double c1 = 1.0 - std::pow(static_cast<double>(b1_), static_cast<double>(t));
  const double c2 = 1.0 - std::pow(static_cast<double>(b2_), static_cast<double>(t));
  const float step = static_cast<float>(lr_ / c1);
  const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
  for (uint32_t i = 0; i < dim; ++i) {
    m[i] = b1_ * m[i] + (1.0f - b1_) * g[i];
    v[i] = b2_ * v[i] + (1.0f - b2_) * g[i] * g[i];
    w[i] -= step * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps_);
  }
}

void FtrlOptimizer::InitState(float* state, uint32_t dim) const {
  std::memset(state, 0, sizeof(float) * 2 * dim);
}

void FtrlOptimizer::Apply(float* w, float* state, const float* g, uint32_t dim) const {
  float* z = state;
  float* n = state + dim;
  for (uint32_t i = 0; i < dim; ++i) {
    const float n_new = n[i] + g[i] * g[i];
    const float sigma = (std::sqrt(n_new) - std::sqrt(n[i])) / alpha_;
    z[i] += g[i] - sigma * w[i];
    n[i] = n_new;
    if (std::fabs(z[i]) <= l1_) {
      w[i] = 0.0f;
    } else {
      const float sign = z[i] > 0 ? 1.0f : -1.0f;
      w[i] = -(z[i] - sign * l1_) / ((beta_ + std::sqrt(n[i])) / alpha_ + l2_);
    }
  }
}

}  // namespace din
