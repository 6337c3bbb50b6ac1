// The model backend: DIN forward/backward on one device (the CPU or a CUDA GPU) behind
// one interface. The trainer owns one backend per worker process.
//
// Buffers: the backend owns the dense parameters, their gradients and the Dice running
// statistics as flat host float arrays in ModelLayout order, so the trainer can
// all-reduce gradients in one MPI call, run the dense optimizer on params() and
// checkpoint both. Embedding rows are read from the caller's ModelInput buffers during
// a call only; embedding gradients are returned per table, aligned with those rows.
//
// Thread safety: none; one thread drives a backend. Every call blocks until its results
// are in host memory.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/model/batch_stats_sync.h"
#include "worker/model/din_input.h"
#include "worker/model/model_layout.h"

namespace din::config {
class ModelConfig;
}

namespace din::model {

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;
  ModelBackend(const ModelBackend&) = delete;
  ModelBackend& operator=(const ModelBackend&) = delete;

  // "cpu" or "cuda".
  virtual std::string_view name() const = 0;
  const ModelLayout& layout() const { return layout_; }

  // Dense parameters [layout().num_params()], seeded from the config at construction.
  // The dense optimizer updates them in place between steps.
  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  // ∂loss/∂params of the last TrainStep (overwritten, not accumulated), same layout.
  // The trainer may all-reduce them in place before the optimizer step.
  std::span<float> grads() { return grads_; }
  // Dice running statistics [layout().num_running()]: per Dice layer its running mean
  // [out] then running variance [out] (LayerSpec::running). For checkpoints and for
  // averaging across workers; read by Predict.
  std::span<float> running_stats() { return running_; }
  std::span<const float> running_stats() const { return running_; }

  // Forward and backward of one training batch: Dice on batch statistics (running
  // statistics advanced), loss = mean binary cross-entropy over the batch. Fills
  // grads() and table_grad(); does not apply any update and adds no regulariser.
  // labels: [input.batch_size] 0/1. Returns the loss.
  Result<float> TrainStep(const ModelInput& input, std::span<const float> labels);

  // ∂loss/∂rows of table t from the last TrainStep: [input.tables[t].rows x dim],
  // row i summed over every occurrence of unique row i in the batch.
  std::span<const float> table_grad(int t) const { return table_grads_[t]; }
  int num_table_grads() const { return static_cast<int>(table_grads_.size()); }

  // Evaluation forward (Dice on running statistics); changes no state but logits().
  // Writes one logit (pre-sigmoid) per sample into logits [input.batch_size].
  Status Predict(const ModelInput& input, std::span<float> logits);

  // Logits of the last TrainStep or Predict, [batch].
  std::span<const float> logits() const { return logits_; }

  // Dice normalises with the statistics of all workers' shares of a step (sync, not
  // owned; nullptr: this batch's own). Then every TrainStep is collective over the
  // workers, including TrainStep of an empty batch by a worker without samples. Both
  // backends implement it, with the same sums, so CPU and CUDA workers may be mixed;
  // Unimplemented for a backend that cannot.
  Status SetBatchStatsSync(BatchStatsSync* sync) { return DoSetBatchStatsSync(sync); }

  // Deterministic: the same inputs give bit-identical results on every run (the default;
  // always so on the CPU). The CUDA backend then sums each embedding row's gradient in a
  // fixed order (an index built on the host) instead of with float atomics, which are
  // faster but add in whatever order the GPU runs them.
  Status SetDeterministic(bool on) { return DoSetDeterministic(on); }

 protected:
  explicit ModelBackend(ModelLayout layout);

  // Hooks. The input is validated and the plan built; logits_ has batch entries and
  // table_grads_[t] has input.tables[t].rows * dim entries (contents unspecified).
  // DoTrainStep fills logits_, grads_, table_grads_, updates running_ and sets *loss.
  virtual Status DoTrainStep(const BatchPlan& plan, const ModelInput& input,
                             std::span<const float> labels, float* loss) = 0;
  // DoPredict fills logits_.
  virtual Status DoPredict(const BatchPlan& plan, const ModelInput& input) = 0;
  virtual Status DoSetDeterministic(bool /*on*/) { return Status::Ok(); }
  virtual Status DoSetBatchStatsSync(BatchStatsSync* sync) {
    (void)sync;
    return Status::Unimplemented("the " + std::string(name()) +
                                 " backend computes Dice statistics per worker");
  }

  const ModelLayout layout_;
  std::vector<float> params_;
  std::vector<float> grads_;
  std::vector<float> running_;
  std::vector<std::vector<float>> table_grads_;
  std::vector<float> logits_;

 private:
  Status Prepare(const ModelInput& input);
  BatchPlan plan_;
};

// Number of usable CUDA devices; 0 when CUDA is not built in or when any CUDA call
// fails (no driver, driver too old, no device).
int CudaDeviceCount();

// The CUDA device of this process: local_rank (OMPI_COMM_WORLD_LOCAL_RANK, may be null)
// modulo count; 0 when it is unset or not a non-negative integer.
int ChooseCudaDevice(int count, const char* local_rank);

// Creates a backend. kind: "cpu"; "cuda" (an error when no device is usable or CUDA is
// not built in); "auto" (CUDA when a device is usable, else CPU). threads: GEMM threads
// of the CPU backend (<= 0: one).
Result<std::unique_ptr<ModelBackend>> CreateBackend(std::string_view kind,
                                                    const config::ModelConfig& config,
                                                    const FieldDims& dims, int threads = 0);

}  // namespace din::model
