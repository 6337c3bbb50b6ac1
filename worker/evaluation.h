// Evaluation on the test set (data.test_path), collective over the workers: every worker
// predicts its part of the test set with evaluation pulls (which create no rows), the
// predictions are gathered to worker 0 and the metrics are computed there exactly over
// all of them. Before predicting, every worker's Dice running statistics (each saw only
// its own batches) are replaced by their mean over the workers, so they are identical on
// every worker from then on.
//
// Thread safety: none; the thread that drives the training makes every call. An
// Evaluator owns none of the objects it is given (client, collective, backend), which
// must outlive it; every worker calls Run at the same point, with no push of its own
// in flight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/data/metrics.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/model/backend.h"
#include "worker/model/din_input.h"
#include "worker/ps_client.h"

namespace din {

// One test prediction as gathered to worker 0 (its bytes travel as they are).
struct Prediction {
  uint64_t user;
  float label;
  float prob;  // sigmoid of the logit
};
static_assert(sizeof(Prediction) == 16);

// The metrics of the predictions gathered to worker 0: the concatenated Prediction
// bytes of every worker.
EvalMetrics MetricsOfPredictions(std::span<const std::byte> gathered);

// Replaces `running` (a ModelBackend's Dice running statistics) by its mean over the
// workers. Collective; nothing to do for one worker.
Status AverageRunningStats(Collective& collective, std::span<float> running);

class Reader;

// The EVAL batch loop that Evaluator::Run and Predict (worker/predict.h) share: reads
// every batch of `reader`, builds the model input, pulls its rows with evaluation pulls
// (which create no rows), predicts, and gathers every worker's predictions, in worker
// order, to worker 0's *gathered (Prediction bytes; the other workers get none).
// Collective.
Status PredictAndGather(Reader& reader, const model::FieldTables& field_tables,
                        const std::vector<int>& table_dims, PsClient& client,
                        model::ModelBackend& backend, Collective& collective,
                        std::vector<std::byte>* gathered);

class Evaluator {
 public:
  // `field_tables` and `table_dims` describe the model input as the trainer builds it.
  Evaluator(const config::TrainConfig& cfg, model::FieldTables field_tables,
            std::vector<int> table_dims, PsClient* client, Collective* collective,
            model::ModelBackend* backend);

  // Waits for every worker (so every push is applied before rows are read), averages
  // the Dice statistics, predicts this worker's part of the test set (read in batches of
  // trainer.eval_batch_size) and gathers the predictions. Collective; the metrics are
  // valid on worker 0 only (the others get default ones).
  Result<EvalMetrics> Run();

 private:
  config::DataConfig data_;  // the config's, read in batches of trainer.eval_batch_size
  const model::FieldTables field_tables_;
  const std::vector<int> table_dims_;
  PsClient* client_;
  Collective* coll_;
  model::ModelBackend* backend_;
};

}  // namespace din
