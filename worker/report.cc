#include "worker/report.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/hash.h"
#include "common/json.h"
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
  // No request of a kind in this run: no latency (NaN, reported as null), not 0 ms.
  auto p = [](const std::vector<double>& v, double q) {
    return v.empty() ? NAN : Percentile(v, q);
  };
  s->pull_ms_p50 = p(l.pull_ms, 0.5);
  s->pull_ms_p99 = p(l.pull_ms, 0.99);
  s->push_ms_p50 = p(l.push_ms, 0.5);
  s->push_ms_p99 = p(l.push_ms, 0.99);
  s->allreduce_ms_p50 = p(l.allreduce_ms, 0.5);
  s->step_ms_p50 = p(l.step_ms, 0.5);
}

uint64_t DenseChecksum(std::span<const float> params, std::span<const float> running) {
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(params.data()),
                                           params.size_bytes())));
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(running.data()),
                                           running.size_bytes())));
  return h;
}

// "tables":{"NAME":{"rows":..,"admitted_ids":..,...},...}: per table, when the figures
// cover the config's tables (docs/design.md §5).
static void AddTableFigures(const ServerFigures& f, const config::TrainConfig& cfg, Json* j) {
  if (f.tables.empty() || static_cast<int>(f.tables.size()) != cfg.tables_size()) return;
  Json tables;
  for (int t = 0; t < cfg.tables_size(); ++t) {
    const ServerFigures::Table& x = f.tables[t];
    Json table;
    table["rows"] = x.rows;
    table["admitted_ids"] = x.admitted_ids;
    table["rejected_ids"] = x.rejected_ids;
    table["rejected_keys"] = x.rejected_keys;
    table["skipped_keys"] = x.skipped_keys;
    table["evicted_rows"] = x.evicted_rows;
    tables[cfg.tables(t).name()] = std::move(table);
  }
  (*j)["tables"] = std::move(tables);
}

// "shard_rows":{"TABLE":{"shards":N,"min":N,"max":N,"cv":X},...},"server_bytes":[N,...]
static void AddBalance(const ServerFigures& f, Json* j) {
  if (f.balance.empty() && f.server_bytes.empty()) return;
  Json rows = Json::object();
  for (const ShardBalance& b : f.balance) {
    Json table;
    table["shards"] = b.shards;
    table["min"] = b.min;
    table["max"] = b.max;
    table["cv"] = JsonNumber(b.cv, 4);
    rows[b.table] = std::move(table);
  }
  (*j)["shard_rows"] = std::move(rows);
  Json bytes = Json::array();
  for (uint64_t b : f.server_bytes) bytes.push_back(b);
  (*j)["server_bytes"] = std::move(bytes);
}

Json SummaryObject(const TrainSummary& s, const ServerFigures& server_figures,
                   const config::TrainConfig& cfg, int workers, int servers,
                   const std::string& bayes_json) {
  Json j;
  j["train_rows"] = s.train_rows;
  j["epochs"] = s.epochs;
  j["steps"] = s.steps;
  j["samples_trained"] = s.samples_trained;
  j["train_seconds"] = JsonNumber(s.train_seconds, 3);
  // Over this run's own samples and time: a resumed run that trains nothing has no rate.
  j["train_samples_per_s"] =
      JsonRate(static_cast<double>(s.run_samples_trained), s.train_seconds, 1);
  j["prepass_seconds"] = JsonNumber(s.prepass_seconds, 3);
  j["eval_seconds"] = JsonNumber(s.eval_seconds, 3);
  j["final_train_loss"] = JsonNumber(s.final_train_loss);
  j["test_auc"] = s.has_test ? JsonNumber(s.test.auc) : Json(nullptr);
  j["test_gauc"] = s.has_test ? JsonNumber(s.test.gauc) : Json(nullptr);
  j["test_logloss"] = s.has_test ? JsonNumber(s.test.logloss) : Json(nullptr);
  j["test_rows"] = s.test.samples;
  j["gauc_users"] = s.test.gauc_users;
  // din_gen's Bayes-optimal ceiling of the same test set, when it is there.
  if (!bayes_json.empty()) {
    const Json bayes = Json::parse(bayes_json, nullptr, /*allow_exceptions=*/false);
    if (bayes.is_object())
      for (const char* key : {"test_auc", "test_gauc", "test_logloss"}) {
        const auto it = bayes.find(key);
        if (it != bayes.end() && it->is_number())
          j[std::string("bayes_") + key] = JsonNumber(it->get<double>());
      }
  }
  j["pull_ms_p50"] = JsonNumber(s.pull_ms_p50, 3);
  j["pull_ms_p99"] = JsonNumber(s.pull_ms_p99, 3);
  j["push_ms_p50"] = JsonNumber(s.push_ms_p50, 3);
  j["push_ms_p99"] = JsonNumber(s.push_ms_p99, 3);
  j["allreduce_ms_p50"] = JsonNumber(s.allreduce_ms_p50, 3);
  j["step_ms_p50"] = JsonNumber(s.step_ms_p50, 3);
  j["bad_lines"] = s.bad_lines;
  j["server_rows"] = server_figures.rows;
  j["skipped_keys"] = server_figures.skipped_keys;
  AddTableFigures(server_figures, cfg, &j);
  AddBalance(server_figures, &j);
  j["checkpoints"] = s.checkpoints;
  j["checkpoint_seconds"] = JsonNumber(s.checkpoint_seconds, 3);
  if (!s.last_checkpoint.empty()) j["last_checkpoint"] = s.last_checkpoint;
  if (!s.resumed_from.empty()) {
    j["resumed_from"] = s.resumed_from;
    j["resumed_step"] = s.resumed_step;
  }
  if (!s.dump_dir.empty()) {
    j["dump_dir"] = s.dump_dir;
    j["dump_seconds"] = JsonNumber(s.dump_seconds, 3);
  }
  j["workers"] = workers;
  j["servers"] = servers;
  j["backend"] = s.backend;
  j["pooling"] = config::ModelConfig::Pooling_Name(cfg.model().pooling());
  j["staleness"] = cfg.trainer().staleness();
  j["mba_mode"] = config::TrainerConfig::MbaMode_Name(cfg.trainer().mba_mode());
  j["sparse_step"] = config::TrainerConfig::SparseStep_Name(cfg.trainer().sparse_step());
  j["batch_size"] = cfg.data().batch_size();
  char hex[24];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(s.dense_checksum));
  j["dense_checksum"] = hex;
  return j;
}

std::string SummaryJson(const TrainSummary& s, const ServerFigures& server_figures,
                        const config::TrainConfig& cfg, int workers, int servers,
                        const std::string& bayes_json) {
  return JsonLine(SummaryObject(s, server_figures, cfg, workers, servers, bayes_json));
}

std::string StepMetricsJson(const StepFigures& f) {
  Json j;
  j["step"] = f.step;
  j["epoch"] = f.epoch;
  j["samples"] = f.samples_trained;
  j["loss"] = JsonNumber(f.loss);
  j["samples_per_s"] = JsonNumber(f.samples_per_s, 1);
  j["step_ms"] = JsonNumber(f.step_ms, 3);
  j["pull_ms"] = JsonNumber(f.pull_ms, 3);
  j["push_ms"] = JsonNumber(f.push_ms, 3);
  j["allreduce_ms"] = JsonNumber(f.allreduce_ms, 3);
  for (const StepFigures::Table& t : f.tables) {
    Json& x = j["tables"][t.name];
    x["admitted"] = t.admitted;
    x["rejected"] = t.rejected;
    x["evicted"] = t.evicted;
  }
  return JsonLine(j);
}

std::string EvalMetricsJson(const std::string& why, uint64_t step, uint32_t epoch,
                            const EvalMetrics& m, const EvalMetrics* train) {
  Json j;
  j["eval"] = why;
  j["step"] = step;
  j["epoch"] = epoch;
  j["test_auc"] = JsonNumber(m.auc);
  j["test_gauc"] = JsonNumber(m.gauc);
  j["test_logloss"] = JsonNumber(m.logloss);
  j["test_rows"] = m.samples;
  if (train != nullptr) {
    j["train_auc"] = JsonNumber(train->auc);
    j["train_gauc"] = JsonNumber(train->gauc);
    j["train_rows"] = train->samples;
  }
  return JsonLine(j);
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

void ProgressMeter::AddPredictions(std::span<const float> labels, std::span<const float> logits,
                                   std::span<const uint64_t> users) {
  for (size_t i = 0; i < labels.size(); ++i) {
    const uint64_t user = i < users.size() ? users[i] : 0;
    if (recent_labels_.size() < kRecent) {
      recent_labels_.push_back(labels[i]);
      recent_probs_.push_back(Sigmoid(logits[i]));
      recent_users_.push_back(user);
    } else {
      recent_labels_[recent_pos_] = labels[i];
      recent_probs_[recent_pos_] = Sigmoid(logits[i]);
      recent_users_[recent_pos_] = user;
      recent_pos_ = (recent_pos_ + 1) % kRecent;
    }
  }
}

EvalMetrics ProgressMeter::RecentMetrics() const {
  EvalAccumulator acc;
  for (size_t i = 0; i < recent_labels_.size(); ++i)
    acc.Add(recent_users_[i], recent_labels_[i], recent_probs_[i]);
  return acc.Compute();
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
