// Adam for the dense (replicated) weights, on the flat buffers of a ModelBackend. Every
// worker applies it to the same all-reduced gradients, so the weights stay identical.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace din::config {
class DenseAdamConfig;
}

namespace din::model {

class DenseAdam {
 public:
  DenseAdam(const config::DenseAdamConfig& config, size_t num_params);

  // params -= lr · m̂ / (sqrt(v̂) + ε) (+ decoupled weight decay), with bias correction
  // by the step count. grads is read only.
  void Step(std::span<float> params, std::span<const float> grads);

  // Optimizer state for checkpoints: first and second moments [num_params] and the step.
  std::span<float> first_moment() { return m_; }
  std::span<float> second_moment() { return v_; }
  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  float lr_, beta1_, beta2_, eps_, weight_decay_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

}  // namespace din::model
