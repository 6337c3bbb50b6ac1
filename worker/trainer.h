// The training loop of one worker (docs/design.md §10; MBA §9, evaluation §11): read →
// batch → unique IDs per table → pull → DIN forward/backward → per-unique-ID gradient plus
// the mini-batch aware L2 term → push → all-reduce of the dense gradients over the workers
// → dense Adam step.
//
// Every worker runs one Trainer over its own partition of the training data; together
// they advance in lock-step, one all-reduce per step. A worker whose partition runs out
// first keeps joining the all-reduce with zero gradients until every worker is done, so
// unequal partitions never deadlock; the dense gradient is averaged over the workers
// that had a batch in that step.
//
// Staleness (TrainerConfig.staleness): 0 — the pull of batch t+1 is sent after the push
// of batch t was applied; 1 — it is sent before batch t is computed (so it overlaps the
// compute), after the push of batch t-1 was applied.
//
// Evaluation is collective: every worker predicts its part of the test set (evaluation
// pulls create no rows), the predictions are gathered to worker 0 and the metrics are
// computed there exactly over all of them. It first replaces every worker's Dice running
// statistics (each saw only its own batches) by their mean, so they are identical from
// then on.
//
// Checkpoints (TrainerConfig.checkpoint; layout in worker/checkpoint.h) are taken at a
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

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/batch.h"
#include "common/data/metrics.h"
#include "common/data/reader.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/model/backend.h"
#include "worker/model/dense_adam.h"
#include "worker/model/din_input.h"
#include "worker/ps_client.h"

namespace din {

// Adds the mini-batch aware L2 term (docs/design.md §9) to the gradients of one table's unique
// rows: grads[i] += lambda * rows[i] / n_i, row-major [counts.size() x dim]. A count of 0
// (an ID the counts never reached) is taken as 1. Only the given rows are touched.
void AddMbaTerm(float lambda, int dim, std::span<const float> rows,
                std::span<const uint32_t> counts, std::span<float> grads);

// Figures of a finished run, as worker 0 reports them.
struct TrainSummary {
  uint64_t train_rows = 0;       // samples in one pass over the training data, all workers
  uint64_t samples_trained = 0;  // all epochs, all workers
  uint32_t epochs = 0;
  uint64_t steps = 0;
  std::string dump_dir;  // where the tables were dumped (empty: no dump)
  double dump_seconds = 0;
  double prepass_seconds = 0;
  double train_seconds = 0;     // the training steps, without PREPASS and evaluations
  double eval_seconds = 0;      // all evaluations
  double final_train_loss = 0;  // mean loss over the last epoch's samples
  bool has_test = false;
  EvalMetrics test;
  // Latencies seen by worker 0, from sending a request to seeing its reply.
  double pull_ms_p50 = 0, pull_ms_p99 = 0, push_ms_p50 = 0, push_ms_p99 = 0;
  double allreduce_ms_p50 = 0, step_ms_p50 = 0;
  uint64_t bad_lines = 0;       // skipped malformed training lines, all workers
  uint64_t dense_checksum = 0;  // of the final dense parameters and Dice statistics
  uint64_t server_rows = 0;     // rows on all servers at the end (set by the caller)
  // Keys that got no row because their shard was full (when_full: SKIP_NEW; set by the
  // caller).
  uint64_t skipped_keys = 0;
  std::string backend;
  uint64_t resumed_step = 0;       // the step the run resumed from (0: a fresh start)
  std::string resumed_from;        // that checkpoint's directory
  std::string last_checkpoint;     // the newest checkpoint this run wrote
  uint32_t checkpoints = 0;        // how many this run wrote
  double checkpoint_seconds = 0;   // time spent writing them
  bool stopped = false;            // a stop request ended training early
  std::string stopped_checkpoint;  // the checkpoint written then (empty: none configured)
};

// Asks the Trainers of this process to stop after the next step with a checkpoint
// (without a checkpoint directory: to stop without one). Async-signal-safe.
void RequestStop();

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

  // Checks the config (schema tables declared, trainer options) and builds the model.
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
  TrainSummary& mutable_summary() { return summary_; }
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
  Status Prepare(Slot* slot, Reader* reader, bool* exhausted);
  Status WaitPull(Slot* slot);
  Status WaitPush();
  // Sends the counts of the batch's samples per unique ID (ONLINE mode) and waits.
  Status PushBatchCounts(const Slot& slot);
  // `resumed`: the epoch continues from a restored reader position and counters.
  Status RunEpoch(uint32_t epoch, Reader* reader, bool resumed);
  // Restores the state of the checkpoint that resume_from designates (collective).
  Status Resume(Reader* reader);
  // Writes a checkpoint of the state after step_ (collective); `reader_state` is the
  // training reader's position at that point.
  Status WriteCheckpoint(const std::string& reader_state);
  Status PushGradients(Slot* slot);
  Status AverageRunningStats();
  void Progress(bool force);
  void WriteMetrics(const std::string& json);
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
  Slot slots_[2];
  std::vector<float> reduce_buf_;               // dense grads + [has_batch, loss_sum, samples]
  std::vector<std::vector<float>> push_grads_;  // per table
  bool push_pending_ = false;
  PsClient::Handle push_ = 0;
  double push_start_ = 0;

  // Progress and figures.
  TrainSummary summary_;
  uint64_t step_ = 0;
  uint32_t epoch_ = 0;
  double epoch_loss_sum_ = 0;
  uint64_t epoch_samples_ = 0;
  double window_loss_sum_ = 0;
  uint64_t window_samples_ = 0;
  double window_start_ = 0, last_log_ = 0, last_bar_ = 0, train_start_ = 0;
  std::vector<double> pull_ms_, push_ms_, allreduce_ms_, step_ms_;
  std::vector<float> recent_labels_, recent_probs_;  // worker 0's last training predictions
  size_t recent_pos_ = 0;
  std::FILE* metrics_ = nullptr;
  // Checkpoints.
  uint64_t last_ckpt_step_ = 0;
  double last_ckpt_time_ = 0;
  bool stop_ = false;
};

// The one JSON line din_worker prints at the end (from worker 0). `bayes_json`: the
// content of a bayes.json next to the test file (din_gen's ceiling), or empty.
std::string SummaryJson(const TrainSummary& s, const config::TrainConfig& cfg, int workers,
                        int servers, const std::string& bayes_json);

}  // namespace din
