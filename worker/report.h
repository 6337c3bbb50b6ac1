// What the trainer reports: worker 0's progress (log lines or a progress bar), the
// per-step and per-evaluation lines of the metrics file (JSON lines), the latencies and
// their percentiles, and the figures of a finished run with the one JSON line din_worker
// prints at the end.
//
// Everything here is plain data and formatting; nothing is collective. The trainer
// feeds it from its own thread.
//
// Thread safety: none; one thread uses each object. MetricsFile owns its FILE*.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "common/data/metrics.h"
#include "common/json.h"
#include "common/proto/config.pb.h"
#include "common/status.h"

namespace din {

// `x` printed with the printf format `fmt`, or "null" when it is not finite (JSON has
// no NaN; the logs show the same).
std::string FormatNumber(double x, const char* fmt = "%.6f");

// The element of rank floor(q * n) (clamped to the last) of `v`, which is taken by value
// and partially reordered; 0 for an empty `v`.
double Percentile(std::vector<double> v, double q);

// Latencies seen by this worker, in milliseconds, one entry per request or step.
struct Latencies {
  std::vector<double> pull_ms;       // from sending a pull to seeing its reply
  std::vector<double> push_ms;       // from sending a push to seeing it applied
  std::vector<double> allreduce_ms;  // the per-step all-reduce
  std::vector<double> step_ms;       // a step, without evaluations and checkpoints

  // The latest entry of `v`, or 0.
  static double Last(const std::vector<double>& v) { return v.empty() ? 0 : v.back(); }
};

// Figures of a finished run, as worker 0 reports them.
struct TrainSummary {
  uint64_t train_rows = 0;       // samples in one pass over the training data, all workers
  uint64_t samples_trained = 0;  // all epochs, all workers, a resumed run's past included
  uint32_t epochs = 0;
  // Samples trained by this run alone, all workers: what its rates are over.
  uint64_t run_samples_trained = 0;
  uint64_t steps = 0;
  std::string dump_dir;  // where the tables were dumped (empty: no dump)
  double dump_seconds = 0;
  double prepass_seconds = 0;
  uint64_t prepass_flushes = 0;    // worker 0's count map emptied to the servers this often
  uint64_t prepass_map_bytes = 0;  // worker 0's count map
  double train_seconds = 0;        // this run's training steps, without PREPASS and evaluations
  double eval_seconds = 0;         // all evaluations
  double final_train_loss = 0;     // mean loss over the last epoch's samples
  bool has_test = false;
  EvalMetrics test;
  // Latencies seen by worker 0 in this run, from sending a request to seeing its reply
  // (NaN: no such request).
  double pull_ms_p50 = 0, pull_ms_p99 = 0, push_ms_p50 = 0, push_ms_p99 = 0;
  double allreduce_ms_p50 = 0, step_ms_p50 = 0;
  uint64_t bad_lines = 0;       // skipped malformed training lines, all workers
  uint64_t dense_checksum = 0;  // of the final dense parameters and Dice statistics
  std::string backend;
  uint64_t resumed_step = 0;       // the step the run resumed from (0: a fresh start)
  std::string resumed_from;        // that checkpoint's directory
  std::string last_checkpoint;     // the newest checkpoint this run wrote
  uint32_t checkpoints = 0;        // how many this run wrote
  double checkpoint_seconds = 0;   // time spent writing them
  bool stopped = false;            // a stop request ended training early
  std::string stopped_checkpoint;  // the checkpoint written then (empty: none configured)
};

// Sets the latency percentiles of *s (p50 and p99 of pulls and pushes, p50 of the
// all-reduce and of steps) from `l`; NaN where `l` has no entry.
void SetLatencyPercentiles(const Latencies& l, TrainSummary* s);

// The checksum of the dense state summarised as TrainSummary::dense_checksum: a hash of
// the bytes of the dense parameters and then of the Dice running statistics.
uint64_t DenseChecksum(std::span<const float> params, std::span<const float> running);

// Figures the servers hold at the end of a run (from PsClient::Stats, summed over all
// servers), which the trainer does not know.
// Rows per shard of one table: how evenly the IDs spread.
struct ShardBalance {
  std::string table;
  uint32_t shards = 0;
  uint64_t min = 0, max = 0;
  double cv = 0;  // coefficient of variation: standard deviation / mean (0 when empty)
};

struct ServerFigures {
  uint64_t rows = 0;  // rows on all servers
  // Keys that got no row because their shard was full (when_full: SKIP_NEW).
  uint64_t skipped_keys = 0;
  // Per table in config order (STATS summed over shards): rows, the IDs ADMIT gave a row
  // and refused, the keys refused a row after admission closed, and skipped keys
  // (docs/design.md §5). Written as "tables" when it has one entry per config table.
  struct Table {
    uint64_t rows = 0;
    uint64_t admitted_ids = 0;
    uint64_t rejected_ids = 0;
    uint64_t rejected_keys = 0;
    uint64_t skipped_keys = 0;
    uint64_t evicted_rows = 0;
  };
  std::vector<Table> tables;
  std::vector<ShardBalance> balance;   // per table, config order
  std::vector<uint64_t> server_bytes;  // [server] memory of its shards (index and rows)
};

// The figures of every lane's STATS; `server_of(table, shard)` names the server holding
// a shard, `servers` their number.
template <typename Stats, typename ServerOf>
ServerFigures ServerFiguresOf(const Stats& stats, const config::TrainConfig& cfg, int servers,
                              ServerOf&& server_of) {
  ServerFigures f;
  f.server_bytes.assign(servers, 0);
  f.tables.resize(cfg.tables_size());
  std::vector<std::vector<uint64_t>> rows(cfg.tables_size());
  for (int t = 0; t < cfg.tables_size(); ++t) rows[t].assign(cfg.tables(t).shards(), 0);
  for (const auto& s : stats) {
    f.rows += s.rows();
    f.skipped_keys += s.skipped_keys();
    if (s.table() < f.tables.size()) {
      ServerFigures::Table& t = f.tables[s.table()];
      t.rows += s.rows();
      t.admitted_ids += s.admitted_ids();
      t.rejected_ids += s.rejected_ids();
      t.rejected_keys += s.rejected_keys();
      t.skipped_keys += s.skipped_keys();
      t.evicted_rows += s.evicted_rows();
    }
    if (s.table() < rows.size() && s.shard() < rows[s.table()].size())
      rows[s.table()][s.shard()] = s.rows();
    const int server = server_of(static_cast<int>(s.table()), s.shard());
    if (server >= 0 && server < servers) f.server_bytes[server] += s.bytes();
  }
  for (int t = 0; t < cfg.tables_size(); ++t) {
    ShardBalance b;
    b.table = cfg.tables(t).name();
    b.shards = static_cast<uint32_t>(rows[t].size());
    double sum = 0, sq = 0;
    b.min = rows[t].empty() ? 0 : rows[t][0];
    for (uint64_t r : rows[t]) {
      b.min = std::min(b.min, r);
      b.max = std::max(b.max, r);
      sum += static_cast<double>(r);
    }
    const double mean = rows[t].empty() ? 0 : sum / static_cast<double>(rows[t].size());
    for (uint64_t r : rows[t])
      sq += (static_cast<double>(r) - mean) * (static_cast<double>(r) - mean);
    b.cv = mean > 0 ? std::sqrt(sq / static_cast<double>(rows[t].size())) / mean : 0;
    f.balance.push_back(b);
  }
  return f;
}

// The one JSON line din_worker prints at the end (from worker 0). `bayes_json`: the
// content of a bayes.json next to the test file (din_gen's ceiling), or empty (text
// that is not a JSON object adds nothing). Figures that do not exist are null: a rate
// over no samples or no time, a latency of no request.
Json SummaryObject(const TrainSummary& s, const ServerFigures& servers_figures,
                   const config::TrainConfig& cfg, int workers, int servers,
                   const std::string& bayes_json);
// SummaryObject on one line.
std::string SummaryJson(const TrainSummary& s, const ServerFigures& servers_figures,
                        const config::TrainConfig& cfg, int workers, int servers,
                        const std::string& bayes_json);

// One training step's line of the metrics file.
struct StepFigures {
  uint64_t step = 0;
  uint32_t epoch = 0;            // 1-based
  uint64_t samples_trained = 0;  // so far, all workers
  double loss = 0;               // mean over the step's samples
  double samples_per_s = 0;
  double step_ms = 0, pull_ms = 0, push_ms = 0, allreduce_ms = 0;
  // Tables with admission or eviction (docs/design.md §5), since the previous line:
  // IDs given a row (admitted_ids), IDs or keys refused one (rejected_ids +
  // rejected_keys) and rows evicted, summed over the table's shards. Written as
  // "tables":{"NAME":{"admitted":..,"rejected":..,"evicted":..}} when not empty.
  struct Table {
    std::string name;
    uint64_t admitted = 0, rejected = 0, evicted = 0;
  };
  std::vector<Table> tables;
};
std::string StepMetricsJson(const StepFigures& f);
// One evaluation's line of the metrics file; `why`: "step", "epoch" or "final".
// `train`: the metrics of worker 0's recent training predictions (train_auc,
// train_gauc), or nullptr.
std::string EvalMetricsJson(const std::string& why, uint64_t step, uint32_t epoch,
                            const EvalMetrics& m, const EvalMetrics* train = nullptr);

// trainer.metrics_path: one JSON object per line. Closed on destruction.
class MetricsFile {
 public:
  MetricsFile() = default;
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  // Creates `path` (append: continues an existing file, as a resumed run does).
  Status Open(const std::string& path, bool append);
  bool is_open() const { return file_ != nullptr; }
  // Writes `json` and a newline; nothing when the file is not open.
  void Write(const std::string& json);
  void Flush();

 private:
  std::FILE* file_ = nullptr;
};

// One progress report of worker 0.
struct ProgressLine {
  uint32_t epoch = 0;  // 1-based
  uint32_t epochs = 0;
  uint64_t step = 0;
  uint64_t samples = 0;      // trained so far, all workers
  double fraction = NAN;     // of all epochs' samples (NaN: the data size is not known)
  double samples_per_s = 0;  // since the previous report
  double loss = NAN;         // mean since the previous report
  double train_auc = NAN;    // over recent training predictions
  double pull_ms = 0, push_ms = 0;
  double eta_s = NAN;
};
// "epoch 1/2 step 40 samples 5120 (25%)  ...": a log line (without glog's prefix).
std::string FormatProgressLog(const ProgressLine& p);
// "\r[=======       ]  25% epoch 1/2 ...": the progress bar, redrawn in place.
std::string FormatProgressBar(const ProgressLine& p);

// Worker 0's progress between reports: the samples and loss since the previous report
// and a window of its most recent training predictions (for a running AUC).
class ProgressMeter {
 public:
  // Training predictions the running AUC is computed over.
  static constexpr size_t kRecent = 50000;

  // `bar`: redraw a progress bar on stderr (at most every 0.25 s) instead of logging a
  // line every `log_every_seconds`.
  ProgressMeter(bool bar, double log_every_seconds);

  // Training starts (or resumes) at `now` (seconds on a steady clock).
  void Start(double now);
  // A step's samples and the sum of their losses.
  void AddSamples(double loss_sum, uint64_t samples);
  // Worker 0's predictions of a batch: labels and logits, as many of each, and the
  // samples' GAUC keys (empty: all 0).
  void AddPredictions(std::span<const float> labels, std::span<const float> logits,
                      std::span<const uint64_t> users = {});
  // AUC, GAUC and logloss of the recent training predictions (kRecent at most).
  EvalMetrics RecentMetrics() const;
  // `secs` spent outside training (evaluation, checkpoint) do not count in the rate.
  void ExcludeTime(double secs) { window_start_ += secs; }

  // The report due at `now` (`force`: due anyway), or false when none is due. Starts a
  // new window. `train_rows`: samples in one pass over the data (0: not yet known);
  // `eval_seconds`: evaluation time since training started, not counted in the ETA.
  bool Due(bool force, double now, uint32_t epoch, uint32_t epochs, uint64_t step,
           uint64_t samples_trained, uint64_t train_rows, double eval_seconds,
           const Latencies& latencies, ProgressLine* line);
  bool bar() const { return bar_; }
  double train_start() const { return train_start_; }

 private:
  const bool bar_;
  const double log_every_seconds_;
  double train_start_ = 0, window_start_ = 0, last_report_ = 0;
  double window_loss_sum_ = 0;
  uint64_t window_samples_ = 0;
  std::vector<float> recent_labels_, recent_probs_;
  std::vector<uint64_t> recent_users_;
  size_t recent_pos_ = 0;
};

}  // namespace din
