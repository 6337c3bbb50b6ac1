#include "worker/evaluation.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "common/batch.h"
#include "common/data/reader.h"

namespace din {
namespace {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

EvalMetrics MetricsOfPredictions(std::span<const std::byte> gathered) {
  EvalAccumulator acc;
  const size_t n = gathered.size() / sizeof(Prediction);
  for (size_t i = 0; i < n; ++i) {
    Prediction p;
    std::memcpy(&p, gathered.data() + i * sizeof(Prediction), sizeof(p));
    acc.Add(p.user, p.label, p.prob);
  }
  return acc.Compute();
}

Status AverageRunningStats(Collective& collective, std::span<float> running) {
  if (collective.size() == 1) return Status::Ok();
  DIN_RETURN_IF_ERROR(collective.AllReduceSum(running));
  const float inv = 1.0f / static_cast<float>(collective.size());
  for (float& v : running) v *= inv;
  return Status::Ok();
}

Status PredictAndGather(Reader& reader, const model::FieldTables& field_tables,
                        const std::vector<int>& table_dims, PsClient& client,
                        model::ModelBackend& backend, Collective& collective,
                        std::vector<std::byte>* gathered) {
  Batch batch;
  model::InputBuilder builder(field_tables, table_dims);
  model::ModelInput input;
  std::vector<TablePull> pulls(table_dims.size());
  std::vector<float> logits;
  std::vector<Prediction> preds;
  for (;;) {
    DIN_ASSIGN_OR_RETURN(bool got, reader.NextBatch(&batch));
    if (!got) break;
    DIN_RETURN_IF_ERROR(builder.Build(batch, &input));
    std::vector<PullSpec> specs;
    for (int t = 0; t < builder.num_tables(); ++t)
      if (!builder.unique_ids(t).empty())
        specs.push_back(PullSpec{t, builder.unique_ids(t), &pulls[t]});
    DIN_ASSIGN_OR_RETURN(auto h, client.Pull(specs, wire::EVAL));
    DIN_RETURN_IF_ERROR(client.Wait(h));
    for (int t = 0; t < builder.num_tables(); ++t)
      input.tables[t].data = input.tables[t].rows ? pulls[t].values.data() : nullptr;
    logits.resize(batch.size);
    DIN_RETURN_IF_ERROR(backend.Predict(input, logits));
    for (size_t i = 0; i < batch.size; ++i)
      preds.push_back(Prediction{batch.users[i], batch.labels[i], Sigmoid(logits[i])});
  }
  return collective.GatherToRoot(std::as_bytes(std::span<const Prediction>(preds)), gathered);
}

Evaluator::Evaluator(const config::TrainConfig& cfg, model::FieldTables field_tables,
                     std::vector<int> table_dims, PsClient* client, Collective* collective,
                     model::ModelBackend* backend)
    : data_(cfg.data()),
      field_tables_(std::move(field_tables)),
      table_dims_(std::move(table_dims)),
      client_(client),
      coll_(collective),
      backend_(backend) {
  data_.set_batch_size(cfg.trainer().eval_batch_size());
}

Result<EvalMetrics> Evaluator::Run() {
  // Every worker's pushes are applied before anyone reads rows for evaluation.
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  // The Dice running statistics differ per worker (each saw its own batches); evaluate
  // with their mean, the same on every worker.
  DIN_RETURN_IF_ERROR(AverageRunningStats(*coll_, backend_->running_stats()));

  DIN_ASSIGN_OR_RETURN(auto reader, Reader::OpenTest(data_, coll_->rank(), coll_->size()));
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(
      PredictAndGather(*reader, field_tables_, table_dims_, *client_, *backend_, *coll_, &all));
  if (coll_->rank() != 0) return EvalMetrics{};
  return MetricsOfPredictions(all);
}

}  // namespace din
