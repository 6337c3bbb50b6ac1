#include "worker/model/dense_adam.h"

#include <cmath>

#include <glog/logging.h>

#include "common/proto/model_config.pb.h"

namespace din::model {

DenseAdam::DenseAdam(const config::DenseAdamConfig& config, size_t num_params)
    : lr_(config.learning_rate()),
      beta1_(config.beta1()),
      beta2_(config.beta2()),
      eps_(config.epsilon()),
      weight_decay_(config.weight_decay()),
      m_(num_params, 0.0f),
      v_(num_params, 0.0f) {}

void DenseAdam::Step(std::span<float> params, std::span<const float> grads) {
  CHECK_EQ(params.size(), m_.size());
  CHECK_EQ(grads.size(), m_.size());
  ++step_;
  const double c1 = 1.0 - std::pow(static_cast<double>(beta1_), static_cast<double>(step_));
  const double c2 = 1.0 - std::pow(static_cast<double>(beta2_), static_cast<double>(step_));
  const float step_size = static_cast<float>(lr_ / c1);
  const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
  for (size_t i = 0; i < params.size(); ++i) {
    const float g = grads[i];
    m_[i] = beta1_ * m_[i] + (1.0f - beta1_) * g;
    v_[i] = beta2_ * v_[i] + (1.0f - beta2_) * g * g;
    const float denom = std::sqrt(v_[i]) * inv_sqrt_c2 + eps_;
    params[i] -= step_size * m_[i] / denom + lr_ * weight_decay_ * params[i];
  }
}

}  // namespace din::model
