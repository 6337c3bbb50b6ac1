// The CPU backend: CpuEngine<float> (Eigen GEMMs over the whole batch) behind the
// ModelBackend interface.
#pragma once

#include <string_view>
#include <vector>

#include "worker/model/backend.h"
#include "worker/model/cpu_engine.h"

namespace din::model {

class CpuBackend final : public ModelBackend {
 public:
  // Runs on `threads` threads (1 when threads <= 0): row chunks of every layer in
  // parallel. One by default: the trainer scales over cores with worker processes, and
  // threads lose badly when their cores are shared with other busy processes. Sets
  // Eigen's process-wide thread count at every call.
  CpuBackend(ModelLayout layout, int threads);
  std::string_view name() const override { return "cpu"; }

 protected:
  Status DoTrainStep(const BatchPlan& plan, const ModelInput& input, std::span<const float> labels,
                     float* loss) override;
  Status DoPredict(const BatchPlan& plan, const ModelInput& input) override;
  Status DoSetBatchStatsSync(BatchStatsSync* sync) override {
    engine_.set_batch_stats_sync(sync);
    return Status::Ok();
  }

 private:
  CpuEngine<float> engine_;
  std::vector<const float*> tables_;
  std::vector<float*> table_grad_ptrs_;
  const int threads_;
};

}  // namespace din::model
