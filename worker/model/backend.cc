#include "worker/model/backend.h"

#include <cstdlib>
#include <string>
#include <utility>

#include <glog/logging.h>

#include "common/proto/model_config.pb.h"
#include "worker/model/cpu_backend.h"
#include "worker/model/cuda_backend.h"

namespace din::model {

ModelBackend::ModelBackend(ModelLayout layout)
    : layout_(std::move(layout)),
      params_(layout_.num_params()),
      grads_(layout_.num_params()),
      running_(layout_.num_running()) {
  layout_.Initialize(params_, running_);
}

Status ModelBackend::Prepare(const ModelInput& input) {
  DIN_RETURN_IF_ERROR(plan_.Build(input, layout_));
  logits_.resize(input.batch_size);
  table_grads_.resize(input.tables.size());
  for (size_t t = 0; t < input.tables.size(); ++t)
    table_grads_[t].resize(static_cast<size_t>(input.tables[t].rows) * input.tables[t].dim);
  return Status::Ok();
}

Result<float> ModelBackend::TrainStep(const ModelInput& input, std::span<const float> labels) {
  if (labels.size() != input.batch_size)
    return Status::InvalidArgument("TrainStep: " + std::to_string(labels.size()) +
                                   " labels for a batch of " + std::to_string(input.batch_size));
  DIN_RETURN_IF_ERROR(Prepare(input));
  float loss = 0.0f;
  DIN_RETURN_IF_ERROR(DoTrainStep(plan_, input, labels, &loss));
  return loss;
}

Status ModelBackend::Predict(const ModelInput& input, std::span<float> logits) {
  if (logits.size() != input.batch_size)
    return Status::InvalidArgument("Predict: output has " + std::to_string(logits.size()) +
                                   " entries for a batch of " + std::to_string(input.batch_size));
  DIN_RETURN_IF_ERROR(Prepare(input));
  DIN_RETURN_IF_ERROR(DoPredict(plan_, input));
  std::copy(logits_.begin(), logits_.end(), logits.begin());
  return Status::Ok();
}

int ChooseCudaDevice(int count, const char* local_rank) {
  if (count <= 0 || local_rank == nullptr) return 0;
  char* end = nullptr;
  const long rank = std::strtol(local_rank, &end, 10);
  if (end == local_rank || *end != '\0' || rank < 0) return 0;
  return static_cast<int>(rank % count);
}

Result<std::unique_ptr<ModelBackend>> CreateBackend(std::string_view kind,
                                                    const config::ModelConfig& config,
                                                    const FieldDims& dims, int threads) {
  DIN_ASSIGN_OR_RETURN(ModelLayout layout, ModelLayout::Create(config, dims));
  if (kind == "cpu" || (kind == "auto" && CudaDeviceCount() == 0))
    return std::unique_ptr<ModelBackend>(new CpuBackend(std::move(layout), threads));
  if (kind == "cuda" || kind == "auto") {
    // Workers sharing a node spread over its devices by their local rank.
    const int count = CudaDeviceCount();
    const char* local_rank = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    const int device = ChooseCudaDevice(count, local_rank);
    LOG(INFO) << "CUDA backend on device " << device << " of " << count << " (local rank "
              << (local_rank != nullptr ? local_rank : "unset") << ")";
    return CreateCudaBackend(std::move(layout), device);
  }
  return Status::InvalidArgument("unknown backend '" + std::string(kind) +
                                 "' (expected auto, cpu or cuda)");
}

}  // namespace din::model
