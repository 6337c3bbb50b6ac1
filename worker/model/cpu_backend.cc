#include "worker/model/cpu_backend.h"

#include <algorithm>
#include <utility>

#include <Eigen/Core>

namespace din::model {

CpuBackend::CpuBackend(ModelLayout layout, int threads)
    : ModelBackend(std::move(layout)), engine_(&layout_), threads_(threads > 0 ? threads : 1) {}

Status CpuBackend::DoTrainStep(const BatchPlan& plan, const ModelInput& input,
                               std::span<const float> labels, float* loss) {
  Eigen::setNbThreads(threads_);
  tables_.resize(input.tables.size());
  table_grad_ptrs_.resize(input.tables.size());
  for (size_t t = 0; t < input.tables.size(); ++t) {
    tables_[t] = input.tables[t].data;
    table_grad_ptrs_[t] = table_grads_[t].data();
  }
  *loss = engine_.Forward(plan, input, tables_, params_.data(), running_.data(), Mode::kTrain,
                          /*update_running=*/true, labels);
  engine_.Backward(plan, input, params_.data(), labels, grads_.data(), table_grad_ptrs_);
  std::copy(engine_.logits().begin(), engine_.logits().end(), logits_.begin());
  return Status::Ok();
}

Status CpuBackend::DoPredict(const BatchPlan& plan, const ModelInput& input) {
  Eigen::setNbThreads(threads_);
  tables_.resize(input.tables.size());
  for (size_t t = 0; t < input.tables.size(); ++t) tables_[t] = input.tables[t].data;
  engine_.Forward(plan, input, tables_, params_.data(), running_.data(), Mode::kEval,
                  /*update_running=*/false, {});
  std::copy(engine_.logits().begin(), engine_.logits().end(), logits_.begin());
  return Status::Ok();
}

}  // namespace din::model
