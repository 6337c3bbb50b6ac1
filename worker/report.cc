#include "worker/report.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/hash.h"
#include "common/proto/model_config.pb.h"

namespace din {
namespace {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Short for the builders below.
std::string Num(double x, const char* fmt = "%.6f") { return FormatNumber(x, fmt); }

}  // namespace

std::string FormatNumber(double x, const char* fmt) {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, x);
  return buf;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

void SetLatencyPercentiles(const Latencies& l, TrainSummary* s) {
  s->pull_ms_p50 = Percentile(l.pull_ms, 0.5);
  s->pull_ms_p99 = Percentile(l.pull_ms, 0.99);
  s->push_ms_p50 = Percentile(l.push_ms, 0.5);
  s->push_ms_p99 = Percentile(l.push_ms, 0.99);
  s->allreduce_ms_p50 = Percentile(l.allreduce_ms, 0.5);
  s->step_ms_p50 = Percentile(l.step_ms, 0.5);
}

uint64_t DenseChecksum(std::span<const float> params, std::span<const float> running) {
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(params.data()),
                                           params.size_bytes())));
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(running.data()),
                                           running.size_bytes())));
  return h;
}

// ,"tables":{"NAME":{"rows":..,"admitted_ids":..,...},...}, or nothing when the figures
// do not cover the config's tables.
static std::string TableFiguresJson(const ServerFigures& f, const config::TrainConfig& cfg) {
  if (f.tables.empty() || static_cast<int>(f.tables.size()) != cfg.tables_size()) return "";
  std::string j = ",\"tables\":{";
  for (int t = 0; t < cfg.tables_size(); ++t) {
    const ServerFigures::Table& x = f.tables[t];
    j += (t > 0 ? ",\"" : "\"") + cfg.tables(t).name() + "\":{\"rows\":" + std::to_string(x.rows) +
         ",\"admitted_ids\":" + std::to_string(x.admitted_ids) +
         ",\"rejected_ids\":" + std::to_string(x.rejected_ids) +
         ",\"rejected_keys\":" + std::to_string(x.rejected_keys) +
         ",\"skipped_keys\":" + std::to_string(x.skipped_keys) +
         ",\"evicted_rows\":" + std::to_string(x.evicted_rows) + "}";
  }
  return j + "}";
}

// ,"shard_rows":{"TABLE":{"shards":N,"min":N,"max":N,"cv":X},...},"server_bytes":[N,...]
static std::string BalanceJson(const ServerFigures& f) {
  std::string j = ",\"shard_rows\":{";
  for (size_t i = 0; i < f.balance.size(); ++i) {
    const ShardBalance& b = f.balance[i];
    if (i > 0) j += ',';
    j += '"';
    j += b.table;
    j += "\":{\"shards\":";
    j += std::to_string(b.shards);
    j += ",\"min\":";
    j += std::to_string(b.min);
    j += ",\"max\":";
    j += std::to_string(b.max);
    j += ",\"cv\":";
    j += Num(b.cv, "%.4f");
    j += '}';
  }
  j += "},\"server_bytes\":[";
  for (size_t i = 0; i < f.server_bytes.size(); ++i) {
    if (i > 0) j += ',';
    j += std::to_string(f.server_bytes[i]);
  }
  j += ']';
  return j;
}

std::string SummaryJson(const TrainSummary& s, const ServerFigures& server_figures,
                        const config::TrainConfig& cfg, int workers, int servers,
                        const std::string& bayes_json) {
  const double train_sps = s.train_seconds > 0 ? s.samples_trained / s.train_seconds : 0;
  std::string j = "{\"train_rows\":" + std::to_string(s.train_rows) +
                  ",\"epochs\":" + std::to_string(s.epochs) +
                  ",\"steps\":" + std::to_string(s.steps) +
                  ",\"samples_trained\":" + std::to_string(s.samples_trained) +
                  ",\"train_seconds\":" + Num(s.train_seconds, "%.3f") +
                  ",\"train_samples_per_s\":" + Num(train_sps, "%.1f") +
                  ",\"prepass_seconds\":" + Num(s.prepass_seconds, "%.3f") +
                  ",\"eval_seconds\":" + Num(s.eval_seconds, "%.3f") +
                  ",\"final_train_loss\":" + Num(s.final_train_loss) +
                  ",\"test_auc\":" + (s.has_test ? Num(s.test.auc) : "null") +
                  ",\"test_gauc\":" + (s.has_test ? Num(s.test.gauc) : "null") +
                  ",\"test_logloss\":" + (s.has_test ? Num(s.test.logloss) : "null") +
                  ",\"test_rows\":" + std::to_string(s.test.samples) +
                  ",\"gauc_users\":" + std::to_string(s.test.gauc_users);
  // din_gen's Bayes-optimal ceiling of the same test set, when it is there.
  for (const char* key : {"test_auc", "test_gauc", "test_logloss"}) {
    const std::string k = std::string("\"") + key + "\":";
    const size_t at = bayes_json.find(k);
    if (at == std::string::npos) continue;
    const double v = std::strtod(bayes_json.c_str() + at + k.size(), nullptr);
    j += ",\"bayes_" + std::string(key) + "\":" + Num(v);
  }
  j += ",\"pull_ms_p50\":" + Num(s.pull_ms_p50, "%.3f") +
       ",\"pull_ms_p99\":" + Num(s.pull_ms_p99, "%.3f") +
       ",\"push_ms_p50\":" + Num(s.push_ms_p50, "%.3f") +
       ",\"push_ms_p99\":" + Num(s.push_ms_p99, "%.3f") +
       ",\"allreduce_ms_p50\":" + Num(s.allreduce_ms_p50, "%.3f") +
       ",\"step_ms_p50\":" + Num(s.step_ms_p50, "%.3f") +
       ",\"bad_lines\":" + std::to_string(s.bad_lines) +
       ",\"server_rows\":" + std::to_string(server_figures.rows) +
       ",\"skipped_keys\":" + std::to_string(server_figures.skipped_keys) +
       TableFiguresJson(server_figures, cfg) + BalanceJson(server_figures) +
       ",\"checkpoints\":" + std::to_string(s.checkpoints) +
       ",\"checkpoint_seconds\":" + Num(s.checkpoint_seconds, "%.3f") +
       (s.last_checkpoint.empty() ? std::string()
                                  : ",\"last_checkpoint\":\"" + s.last_checkpoint + "\"") +
       (s.resumed_from.empty() ? std::string()
                               : ",\"resumed_from\":\"" + s.resumed_from +
                                     "\",\"resumed_step\":" + std::to_string(s.resumed_step)) +
       (s.dump_dir.empty() ? std::string()
                           : ",\"dump_dir\":\"" + s.dump_dir +
                                 "\",\"dump_seconds\":" + Num(s.dump_seconds, "%.3f")) +
       ",\"workers\":" + std::to_string(workers) + ",\"servers\":" + std::to_string(servers) +
       ",\"backend\":\"" + s.backend + "\"" + ",\"pooling\":\"" +
       config::ModelConfig::Pooling_Name(cfg.model().pooling()) + "\"" +
       ",\"staleness\":" + std::to_string(cfg.trainer().staleness()) + ",\"mba_mode\":\"" +
       config::TrainerConfig::MbaMode_Name(cfg.trainer().mba_mode()) + "\"" +
       ",\"sparse_step\":\"" + config::TrainerConfig::SparseStep_Name(cfg.trainer().sparse_step()) +
       "\"" + ",\"batch_size\":" + std::to_string(cfg.data().batch_size()) +
       ",\"dense_checksum\":\"";
  char hex[24];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(s.dense_checksum));
  j += std::string(hex) + "\"}";
  return j;
}

std::string StepMetricsJson(const StepFigures& f) {
  return "{\"step\":" + std::to_string(f.step) + ",\"epoch\":" + std::to_string(f.epoch) +
         ",\"samples\":" + std::to_string(f.samples_trained) + ",\"loss\":" + Num(f.loss) +
         ",\"samples_per_s\":" + Num(f.samples_per_s, "%.1f") +
         ",\"step_ms\":" + Num(f.step_ms, "%.3f") + ",\"pull_ms\":" + Num(f.pull_ms, "%.3f") +
         ",\"push_ms\":" + Num(f.push_ms, "%.3f") +
         ",\"allreduce_ms\":" + Num(f.allreduce_ms, "%.3f") + "}";
}

std::string EvalMetricsJson(const std::string& why, uint64_t step, uint32_t epoch,
                            const EvalMetrics& m) {
  return "{\"eval\":\"" + why + "\",\"step\":" + std::to_string(step) +
         ",\"epoch\":" + std::to_string(epoch) + ",\"test_auc\":" + Num(m.auc) +
         ",\"test_gauc\":" + Num(m.gauc) + ",\"test_logloss\":" + Num(m.logloss) +
         ",\"test_rows\":" + std::to_string(m.samples) + "}";
}

MetricsFile::~MetricsFile() {
  if (file_) std::fclose(file_);
}

Status MetricsFile::Open(const std::string& path, bool append) {
  if (file_) std::fclose(file_);
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_)
    return Status::IoError("cannot create metrics file " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

void MetricsFile::Write(const std::string& json) {
  if (!file_) return;
  std::fputs(json.c_str(), file_);
  std::fputc('\n', file_);
}

void MetricsFile::Flush() {
  if (file_) std::fflush(file_);
}

std::string FormatProgressLog(const ProgressLine& p) {
  return "epoch " + std::to_string(p.epoch) + "/" + std::to_string(p.epochs) + " step " +
         std::to_string(p.step) + " samples " + std::to_string(p.samples) +
         (std::isfinite(p.fraction) ? " (" + Num(p.fraction * 100, "%.0f") + "%)" : "") + "  " +
         Num(p.samples_per_s, "%.0f") + " samples/s  loss " + Num(p.loss, "%.4f") + "  train-auc " +
         Num(p.train_auc, "%.4f") + "  pull " + Num(p.pull_ms, "%.2f") + " ms  push " +
         Num(p.push_ms, "%.2f") + " ms" +
         (std::isfinite(p.eta_s) ? "  ETA " + Num(p.eta_s, "%.0f") + " s" : "");
}

std::string FormatProgressBar(const ProgressLine& p) {
  constexpr int kWidth = 30;
  const int filled = std::isfinite(p.fraction) ? static_cast<int>(p.fraction * kWidth) : 0;
  std::string b(static_cast<size_t>(filled), '=');
  b.resize(kWidth, ' ');
  const std::string pct =
      std::isfinite(p.fraction) ? FormatNumber(p.fraction * 100, "%3.0f%%") : " ?%";
  const std::string eta = std::isfinite(p.eta_s) ? FormatNumber(p.eta_s, "%.0fs") : "?";
  constexpr char kFormat[] = "\r[%s] %s epoch %u/%u  %.0f samples/s  loss %.4f  auc %.4f  ETA %s ";
  const int n = std::snprintf(nullptr, 0, kFormat, b.c_str(), pct.c_str(), p.epoch, p.epochs,
                              p.samples_per_s, p.loss, p.train_auc, eta.c_str());
  std::string out(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  std::snprintf(out.data(), out.size(), kFormat, b.c_str(), pct.c_str(), p.epoch, p.epochs,
                p.samples_per_s, p.loss, p.train_auc, eta.c_str());
  out.resize(out.size() - 1);
  return out;
}

ProgressMeter::ProgressMeter(bool bar, double log_every_seconds)
    : bar_(bar), log_every_seconds_(log_every_seconds) {}

void ProgressMeter::Start(double now) {
  train_start_ = window_start_ = now;
  // The bar is drawn at the first step; log lines start after a full period.
  if (!bar_) last_report_ = now;
}

void ProgressMeter::AddSamples(double loss_sum, uint64_t samples) {
  window_loss_sum_ += loss_sum;
  window_samples_ += samples;
}

void ProgressMeter::AddPredictions(std::span<const float> labels, std::span<const float> logits) {
  for (size_t i = 0; i < labels.size(); ++i) {
    if (recent_labels_.size() < kRecent) {
      recent_labels_.push_back(labels[i]);
      recent_probs_.push_back(Sigmoid(logits[i]));
    } else {
      recent_labels_[recent_pos_] = labels[i];
      recent_probs_[recent_pos_] = Sigmoid(logits[i]);
      recent_pos_ = (recent_pos_ + 1) % kRecent;
    }
  }
}

bool ProgressMeter::Due(bool force, double now, uint32_t epoch, uint32_t epochs, uint64_t step,
                        uint64_t samples_trained, uint64_t train_rows, double eval_seconds,
                        const Latencies& latencies, ProgressLine* line) {
  if (!force && now - last_report_ < (bar_ ? 0.25 : log_every_seconds_)) return false;
  last_report_ = now;
  ProgressLine& p = *line;
  p = ProgressLine{};
  p.epoch = epoch;
  p.epochs = epochs;
  p.step = step;
  p.samples = samples_trained;
  const double elapsed = now - train_start_ - eval_seconds;
  p.samples_per_s = (now - window_start_) > 0 ? window_samples_ / (now - window_start_) : 0;
  p.loss = window_samples_ ? window_loss_sum_ / window_samples_ : NAN;
  if (!recent_labels_.empty()) p.train_auc = Auc(recent_labels_, recent_probs_);
  const double total = static_cast<double>(train_rows) * epochs;
  if (total > 0) {
    p.fraction = std::min(1.0, samples_trained / total);
    const double overall = elapsed > 0 ? samples_trained / elapsed : 0;
    if (overall > 0) p.eta_s = (total - samples_trained) / overall;
  }
  p.pull_ms = Latencies::Last(latencies.pull_ms);
  p.push_ms = Latencies::Last(latencies.push_ms);
  window_start_ = now;
  window_loss_sum_ = 0;
  window_samples_ = 0;
  return true;
}

}  // namespace din
