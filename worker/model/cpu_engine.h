// The CPU implementation of the DIN forward/backward (Eigen), a template over the
// scalar type: float is the production backend, double the reference the gradient
// checks run against. Eigen stays inside cpu_engine.cc (instantiated for float and
// double), so this header can be included with any compile flags.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/model/batch_stats_sync.h"
#include "worker/model/din_input.h"
#include "worker/model/model_layout.h"

namespace din::model {

// One activation over a row-major [n x k] matrix of pre-activations s.
//  - alpha: [k] (PReLU/Dice), ignored otherwise.
//  - Dice, kTrain: mean/inv_std [k] receive the batch statistics; when running_mean and
//    running_var are non-null they are updated with `momentum` (the running variance
//    takes the unbiased batch variance, as batch normalisation does).
//  - Dice, kEval: mean/inv_std receive the statistics derived from the running ones.
//  - p: [n x k] Dice gate, kept for the backward; y: [n x k] output.
//  - sync (Dice, kTrain): when non-null the statistics are those of all workers' rows
//    (BatchStatsSync), and it is called even when n is 0. Returns the number of rows
//    the statistics cover (n without sync).
template <typename T>
double ActivationForward(math::Act act, Mode mode, int n, int k, const T* s, const T* alpha,
                         T* running_mean, T* running_var, T momentum, T eps, T* y, T* p, T* mean,
                         T* inv_std, BatchStatsSync* sync = nullptr);

// Backward of ActivationForward. On entry `grad` holds ∂L/∂y, on return ∂L/∂s (through
// the batch statistics when `batch_stats`); dalpha [k] is overwritten (PReLU/Dice).
// With `sync` (after a synced forward): the statistics covered `global_rows` rows of all
// workers, and this worker's loss is the mean over its `samples` samples; the sums
// through the statistics are then taken over all workers (called even when n is 0).
template <typename T>
void ActivationBackward(math::Act act, bool batch_stats, int n, int k, const T* s, const T* y,
                        const T* p, const T* mean, const T* inv_std, const T* alpha, T* grad,
                        T* dalpha, BatchStatsSync* sync = nullptr, double global_rows = 0,
                        double samples = 0);

// Replaces an MLP's first linear map (CpuAttentionUnit's split first layer): row r of
// the pre-activation is x_r·weight + row_bias[row_group[r]] with x [n x in] and weight
// [in x out] given here instead of the layer's own weight and bias. The backward writes
// ∂weight into dweight [in x out] and leaves the layer's own weight and bias gradients to
// the caller, which reads ∂L/∂(pre-activation) from CpuMlp::first_grad().
template <typename T>
struct FirstLayerInput {
  const T* weight = nullptr;
  int in = 0;
  const T* row_bias = nullptr;
  const int32_t* row_group = nullptr;
  T* dweight = nullptr;
};

// An MLP of LayerSpecs over n input rows; owns its activations and scratch, reused
// between calls (grown, never shrunk).
template <typename T>
class CpuMlp {
 public:
  // x: [n x layers[0].in], or [n x first->in] with a FirstLayerInput (not owned; the
  // Backward uses it too, and its dweight may be set in between); `running` is the flat
  // running-statistics buffer (updated in kTrain when update_running).
  void Forward(std::span<const LayerSpec> layers, const T* params, T* running, T momentum, T eps,
               Mode mode, bool update_running, const T* x, int n,
               const FirstLayerInput<T>* first = nullptr);
  // Output of the last Forward, [n x layers.back().out].
  const T* output() const { return bufs_.back().y.data(); }
  // Backward of the last Forward (through the batch statistics after a kTrain one).
  // dout: [n x out]. Writes (overwrites) every layer's gradients into `grads` at the
  // layers' offsets (the first layer's as FirstLayerInput says when it was given) and,
  // when dx is non-null, ∂L/∂x [n x in].
  void Backward(std::span<const LayerSpec> layers, const T* params, const T* x, int n,
                const T* dout, T* grads, T* dx);
  // ∂L/∂(first layer's pre-activation) [n x layers[0].out] of the last Backward, valid
  // until the next one.
  const T* first_grad() const { return first_grad_; }
  // Dice statistics over all workers (nullptr: this batch's own); `samples`: this
  // worker's samples in the step (the scale of its loss). Set before Forward.
  void set_sync(BatchStatsSync* sync, int samples) {
    sync_ = sync;
    samples_ = samples;
  }

 private:
  struct Buffers {
    std::vector<T> s, y, p, mean, inv_std;
    double global_rows = 0;  // rows the Dice statistics covered (all workers when synced)
  };
  BatchStatsSync* sync_ = nullptr;
  int samples_ = 0;
  std::vector<Buffers> bufs_;
  std::vector<T> g0_, g1_, partial_;
  const T* first_grad_ = nullptr;
  const FirstLayerInput<T>* first_ = nullptr;
  Mode mode_ = Mode::kTrain;
};

// The activation unit, w_j = MLP_att([v_a, e_j, v_a − e_j, v_a ⊙ e_j]), with its first
// layer split (model_math.h, FuseAttentionWeight): v_a·(W_a + W_d) + b once per sample,
// [e_j, v_a ⊙ e_j]·[W_e − W_d; W_p] per position. Gradients are those of the unsplit
// layer. Buffers are reused between calls.
template <typename T>
class CpuAttentionUnit {
 public:
  // va [batch x d], e [n x d] (the kept positions, packed sample after sample),
  // pos_sample [n] each position's sample; the pointers are kept until the Backward.
  void Forward(std::span<const LayerSpec> layers, const T* params, T* running, T momentum, T eps,
               Mode mode, bool update_running, const T* va, const T* e, const int32_t* pos_sample,
               int batch, int n, int d);
  // Scores of the last Forward, [n].
  const T* output() const { return mlp_.output(); }
  // Backward of the last Forward. dout [n]. Overwrites the layers' gradients in `grads`;
  // adds ∂L/∂v_a into dva [batch x d] and ∂L/∂e into de [n x d].
  void Backward(std::span<const LayerSpec> layers, const T* params, const T* dout, T* grads, T* dva,
                T* de);
  void set_sync(BatchStatsSync* sync, int samples) { mlp_.set_sync(sync, samples); }

 private:
  CpuMlp<T> mlp_;
  FirstLayerInput<T> first_;
  const T *va_ = nullptr, *e_ = nullptr;
  const int32_t* pos_sample_ = nullptr;
  int batch_ = 0, n_ = 0, d_ = 0;
  // Fused weights, the candidate share [batch x out], the per-position input [n x 2d] and
  // their gradients.
  std::vector<T> wc_, w2_, cand_, x2_, dw2_, dx2_, dcand_, dwc_;
};

// The whole network. Not thread-safe (one caller); internally the layers run on
// Eigen::nbThreads() row chunks when the work is large enough. Buffers are reused between
// batches.
template <typename T>
class CpuEngine {
 public:
  explicit CpuEngine(const ModelLayout* layout) : layout_(layout) {}

  // Dice statistics over every worker of the step (batch_stats_sync.h); nullptr: the
  // batch's own. With a sync every kTrain Forward/Backward takes part in the workers'
  // sums, also for an empty batch.
  void set_batch_stats_sync(BatchStatsSync* sync) { sync_ = sync; }

  // Forward over a batch. tables[t] points at input.tables[t].rows x dim values (the
  // same rows as input.tables[t].data, in T). Returns the batch-mean BCE when labels
  // is non-empty, else 0. In kTrain with update_running the Dice running statistics
  // in `running` are advanced.
  T Forward(const BatchPlan& plan, const ModelInput& input, std::span<const T* const> tables,
            const T* params, T* running, Mode mode, bool update_running,
            std::span<const float> labels);

  // Backward of the last kTrain Forward. Overwrites grads [num_params] and
  // table_grads[t] [input.tables[t].rows x dim] (per unique row, summed over every
  // occurrence, including the 1/batch of the mean loss).
  void Backward(const BatchPlan& plan, const ModelInput& input, const T* params,
                std::span<const float> labels, T* grads, std::span<T* const> table_grads);

  // Logits of the last Forward, [batch].
  std::span<const T> logits() const { return logits_; }
  // Pooling weights w_j of the last Forward, [positions] (packed as in BatchPlan).
  std::span<const T> pooling_weights() const { return weights_; }

 private:
  const ModelLayout* layout_;
  BatchStatsSync* sync_ = nullptr;
  CpuAttentionUnit<T> att_;
  CpuMlp<T> top_;
  std::vector<T> va_, e_, weights_, u_, z_, logits_;
  std::vector<T> dlogit_, dz_, du_, dva_, de_, dw_;
};

}  // namespace din::model
