// The training loop of one worker (docs/design.md §10; MBA §9, evaluation §11): read →
// batch → unique IDs per table → pull → DIN forward/backward → per-unique-ID gradient plus
// the mini-batch aware L2 term → push → all-reduce of the dense gradients over the workers
// → dense Adam step.
//
// Global batch: data.batch_size samples per step across all workers. The training data
// is read through a StepReader (common/data/step_reader.h): W-independent partitions,
// each contributing its share to every global batch, so the sequence of global batches
// does not depend on W; each worker reads only its own partitions. The workers advance
// in lock-step, one all-reduce per step; a worker whose partitions run out first keeps
// joining it (and, in SYNC mode, pushing empty steps) until every worker is done. The
// dense gradient is the global batch's mean: each worker's mean times its sample count,
// summed over the workers, divided by the step's samples.
//
// Sparse steps (TrainerConfig.sparse_step, docs/design.md §10): SYNC (default) pushes
// the share's gradient sums to every lane, which applies one optimizer step per row for
// the global batch, MBA term included; ASYNC pushes the share's mean gradient plus the
// MBA term and each push is a step of its own.
//
// Staleness (TrainerConfig.staleness): 0 — the pull of batch t+1 is sent after the push
// of batch t was applied; 1 — it is sent before batch t is computed (so it overlaps the
// compute), after the push of batch t-1 was applied.
//
// Evaluation (worker/evaluation.h) is collective: every worker predicts its part of the
// test set, the metrics are computed on worker 0 over all of them, and every worker's
// Dice running statistics are replaced by their mean first. Progress, the metrics file
// and the final figures are formatted by worker/report.h.
//
// Checkpoints (TrainerConfig.checkpoint; layout in worker/checkpoint.h, the worker's
// state and the collective writing and resuming in worker/worker_state.h) are taken at a
// step boundary every worker agrees on: every `every_steps` steps, when worker 0's
// clock says `every_minutes` have passed, after the last step (at_end), and when any
// worker got a stop request (RequestStop, e.g. from SIGUSR1): then training stops right
// after that checkpoint and summary().stopped_checkpoint names it. The agreement rides
// on the per-step all-reduce, so it costs no extra message. With staleness 0 a
// checkpoint captures the state exactly: resuming from it (resume_from) and training on
// gives bit-identical tables, dense weights and metrics to a run that never stopped.
// With staleness 1 the pull sent ahead is re-sent after resuming, so the resumed run
// sees fresher rows than the original would have (same data, same order).
//
// Thread safety: none; the thread that created the Trainer makes every call. The
// Trainer does not own the PsClient or the Collective. RequestStop is the exception: it
// is async-signal-safe and may be called from a signal handler.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/batch.h"
#include "common/data/metrics.h"
#include "common/data/step_reader.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/evaluation.h"
#include "worker/model/backend.h"
#include "worker/model/dense_adam.h"
#include "worker/model/din_input.h"
#include "worker/ps_client.h"
#include "worker/report.h"

namespace din {

// Adds the mini-batch aware L2 term (docs/design.md §9) to the gradients of one table's unique
// rows: grads[i] += lambda * rows[i] / n_i, row-major [counts.size() x dim]. A count of 0
// (an ID the counts never reached) is taken as 1. Only the given rows are touched.
void AddMbaTerm(float lambda, int dim, std::span<const float> rows,
                std::span<const uint32_t> counts, std::span<float> grads);

// Checks that every worker ends with the same dense state (docs/design.md §10): gathers
// each worker's `checksum` (DenseChecksum) on worker 0, which compares them and shares
// its verdict. Collective; on a mismatch every worker logs the checksums and returns
// an error naming the workers that differ from worker 0 and the checksums.
Status CheckDenseReplicas(Collective& coll, uint64_t checksum);

// Asks the Trainers of this process to stop after the next step with a checkpoint
// (without a checkpoint directory: to stop without one). Async-signal-safe.
void RequestStop();

// The model's input under `cfg`: the table each field reads, the fields' embedding
// sizes and every table's dim, as the trainer and prediction build them. Fails on a bad
// schema or a field of an undeclared table.
struct ModelShape {
  model::FieldTables field_tables;
  model::FieldDims dims;
  std::vector<int> table_dims;
};
Result<ModelShape> ModelShapeOf(const config::TrainConfig& cfg);

class Trainer {
 public:
  struct Options {
    // Worker 0 draws a progress bar on stderr (for a terminal) instead of log lines.
    bool progress_bar = false;
    // Parameter servers of the job (recorded in checkpoints).
    int num_servers = 0;
  };
  // Sees every push before it is sent: the table, the unique IDs, the model's gradient
  // (without the MBA term) and the gradient pushed. For tests.
  using PushObserver =
      std::function<void(int table, std::span<const uint64_t> ids, std::span<const float> model,
                         std::span<const float> pushed)>;

  // Builds the model for `cfg`, which ValidateConfig (common/config.h) accepted; checks
  // what that leaves to the trainer (training data given, reading options, the test set
  // present) and opens trainer.metrics_path on worker 0.
  static Result<std::unique_ptr<Trainer>> Create(const config::TrainConfig& cfg, PsClient* client,
                                                 Collective* collective, Options options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // PREPASS (when configured), every epoch, the configured evaluations and the final
  // one. Collective. Blocks until done; the first failure is returned.
  Status Train();
  // One evaluation on the test set (collective); the metrics are valid on worker 0.
  Result<EvalMetrics> Evaluate();

  const TrainSummary& summary() const { return summary_; }
  model::ModelBackend& backend() { return *backend_; }
  void set_push_observer(PushObserver observer) { push_observer_ = std::move(observer); }

 private:
  // One batch in flight: its samples, model input and pulled rows.
  struct Slot {
    Batch batch;
    std::unique_ptr<model::InputBuilder> builder;
    model::ModelInput input;
    std::vector<TablePull> pulls;  // per config table
    bool has_batch = false;
    bool pull_pending = false;
    PsClient::Handle pull = 0;
    double pull_start = 0;
  };

  Trainer(const config::TrainConfig& cfg, PsClient* client, Collective* collective,
          Options options);
  Status Init();
  Status Prepass();
  // Reads the next batch into `slot` and sends its pull (ONLINE: after its counts).
  Status Prepare(Slot* slot, StepReader* reader, bool* exhausted);
  Status WaitPull(Slot* slot);
  Status WaitPush();
  // Sends the counts of the batch's samples per unique ID (ONLINE mode) and waits.
  Status PushBatchCounts(const Slot& slot);
  // `resumed`: the epoch continues from a restored reader position and counters.
  Status RunEpoch(uint32_t epoch, StepReader* reader, bool resumed);
  // Restores the state of the checkpoint that resume_from designates (collective).
  Status Resume(StepReader* reader);
  // Writes a checkpoint of the state after step_ (collective); `reader_state` is the
  // training reader's position at that point.
  Status WriteCheckpoint(const std::string& reader_state);
  // A periodic dump into trainer.dump_dir/dump-STEP (a delta after the base when
  // trainer.incremental). Collective.
  Status WritePeriodicDump();
  // Pushes the embedding gradients of `slot`'s batch (SYNC: every step, even without a
  // batch, as sums over the worker's share; ASYNC: the share's mean plus the MBA term).
  Status PushGradients(Slot* slot);
  // Logs a progress line or redraws the bar on worker 0 when one is due (force: now).
  void Progress(bool force);
  // Evaluates when a test set is configured; `why`: "step", "epoch" or "final".
  Status MaybeEvaluate(const char* why);

  const config::TrainConfig cfg_;
  const config::TrainerConfig tcfg_;
  PsClient* client_;
  Collective* coll_;
  const Options options_;
  PushObserver push_observer_;

  model::FieldTables field_tables_;
  std::vector<int> table_dims_;
  std::unique_ptr<model::ModelBackend> backend_;
  std::unique_ptr<model::DenseAdam> adam_;
  std::unique_ptr<Evaluator> evaluator_;
  Slot slots_[2];
  std::vector<float> reduce_buf_;               // dense grads + StepControl
  std::vector<std::vector<float>> push_grads_;  // per table
  bool push_pending_ = false;
  PsClient::Handle push_ = 0;
  double push_start_ = 0;
  // Dice statistics summed over the workers with the per-step all-reduce's Collective
  // (SYNC with W > 1 on a backend that supports it; docs/design.md §10).
  class CollectiveStatsSync final : public model::BatchStatsSync {
   public:
    explicit CollectiveStatsSync(Collective* coll) : coll_(coll) {}
    void SumOverWorkers(std::span<double> values) override {
      if (status_.ok()) status_ = coll_->AllReduceSum(values);
    }
    Status status() const override { return status_; }

   private:
    Collective* coll_;
    Status status_;
  };
  std::unique_ptr<CollectiveStatsSync> stats_sync_;  // null: each worker's own statistics
  // SYNC pushes sent by this run: the lanes' step number (every worker sends one per
  // round, including the empty round that ends an epoch, so all agree on it).
  uint64_t sync_rounds_ = 0;

  // Progress and figures.
  TrainSummary summary_;
  uint64_t step_ = 0;
  uint32_t epoch_ = 0;
  double epoch_loss_sum_ = 0;
  uint64_t epoch_samples_ = 0;
  Latencies latencies_;
  // Per-step admission and eviction figures (worker 0's metrics lines): the tables with
  // admission (min_count > 1 or probability < 1) or ttl_steps, and their STATS totals
  // at the previous line (admitted, rejected, evicted).
  Status AdmissionFigures(StepFigures* f);
  std::vector<int> admission_tables_;
  std::vector<std::array<uint64_t, 3>> admission_last_;
  ProgressMeter progress_;
  MetricsFile metrics_;
  // Checkpoints.
  uint64_t last_ckpt_step_ = 0;
  double last_ckpt_time_ = 0;
  // Periodic (incremental) dumps: the base's and the latest dump's directory names, the
  // latest's step (UINT64_MAX: none yet) and time.
  std::string dump_base_, dump_parent_;
  uint64_t last_dump_step_ = UINT64_MAX;
  double last_dump_time_ = 0;
  bool stop_ = false;
};

}  // namespace din
