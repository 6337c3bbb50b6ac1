#include "worker/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>

#include <glog/logging.h>

#include "common/config.h"
#include "common/data/id_counts.h"
#include "common/data/schema.h"
#include "common/dump_format.h"
#include "common/hash.h"
#include "common/proto/model_config.pb.h"
#include "worker/checkpoint.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

std::string Num(double x, const char* fmt = "%.6f") {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, x);
  return buf;
}

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// One prediction as gathered to worker 0.
struct Prediction {
  uint64_t user;
  float label;
  float prob;
};
static_assert(sizeof(Prediction) == 16);

constexpr size_t kRecent = 50000;          // training predictions behind the running AUC
constexpr uint64_t kCountChunk = 1 << 20;  // IDs per PREPASS count request
// The per-step all-reduce carries, after the dense gradients: has_batch, loss sum,
// samples, "checkpoint now" (worker 0's clock) and "stop requested" (any worker).
constexpr size_t kReduceExtras = 5;

// Set by RequestStop (a signal handler may call it).
std::atomic<int> g_stop_requested{0};
static_assert(std::atomic<int>::is_always_lock_free);

std::string FloatBytes(std::span<const float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size_bytes());
}

Status RestoreFloats(const std::string& bytes, std::span<float> out, const char* what,
                     const std::string& file) {
  if (bytes.size() != out.size_bytes())
    return Status::InvalidArgument(file + ": " + what + " has " +
                                   std::to_string(bytes.size() / sizeof(float)) +
                                   " values, the model has " + std::to_string(out.size()) +
                                   " (the checkpoint is of another model configuration)");
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return Status::Ok();
}

// Checkpoint bookkeeping gathered to worker 0: the size and XXH64 (hex) of a state file.
struct StateFileInfo {
  uint64_t bytes;
  char xxh64[16];
};
static_assert(sizeof(StateFileInfo) == 24);

}  // namespace

void RequestStop() { g_stop_requested.store(1, std::memory_order_relaxed); }

void AddMbaTerm(float lambda, int dim, std::span<const float> rows,
                std::span<const uint32_t> counts, std::span<float> grads) {
  if (lambda == 0) return;
  CHECK_EQ(rows.size(), counts.size() * static_cast<size_t>(dim));
  CHECK_EQ(grads.size(), rows.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const float scale = lambda / static_cast<float>(std::max<uint32_t>(counts[i], 1));
    const float* w = rows.data() + i * dim;
    float* g = grads.data() + i * dim;
    for (int k = 0; k < dim; ++k) g[k] += scale * w[k];
  }
}

Trainer::Trainer(const config::TrainConfig& cfg, PsClient* client, Collective* collective,
                 Options options)
    : cfg_(cfg), tcfg_(cfg.trainer()), client_(client), coll_(collective), options_(options) {}

Trainer::~Trainer() {
  if (metrics_) std::fclose(metrics_);
}

Result<std::unique_ptr<Trainer>> Trainer::Create(const config::TrainConfig& cfg, PsClient* client,
                                                 Collective* collective, Options options) {
  std::unique_ptr<Trainer> t(new Trainer(cfg, client, collective, options));
  DIN_RETURN_IF_ERROR(t->Init());
  return t;
}

Status Trainer::Init() {
  if (tcfg_.staleness() > 1)
    return Status::InvalidArgument("trainer.staleness must be 0 or 1, got " +
                                   std::to_string(tcfg_.staleness()));
  if (tcfg_.epochs() == 0) return Status::InvalidArgument("trainer.epochs must be >= 1");
  if (tcfg_.eval_batch_size() == 0)
    return Status::InvalidArgument("trainer.eval_batch_size must be >= 1");
  if (cfg_.data().train_path().empty())
    return Status::InvalidArgument("no training data: set data.train_path (or --train)");
  DIN_RETURN_IF_ERROR(ValidateDataConfig(cfg_.data()));
  // A missing test set would otherwise surface only after training.
  if (!cfg_.data().test_path().empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(cfg_.data().test_path(), ec))
      return Status::NotFound("test data " + cfg_.data().test_path() + " does not exist");
  }
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg_.data()));

  auto table_of = [&](const FieldSpec& f) -> Result<int> {
    const int t = FindTable(cfg_, f.table);
    if (t < 0)
      return Status::InvalidArgument("field '" + f.name + "' reads table '" + f.table +
                                     "', which the config does not declare (tables { name: \"" +
                                     f.table + "\" ... })");
    return t;
  };
  model::FieldDims dims;
  for (const auto& f : schema.users()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    field_tables_.user.push_back(t);
    dims.user.push_back(static_cast<int>(cfg_.tables(t).dim()));
  }
  for (const auto& f : schema.candidates()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    field_tables_.candidate.push_back(t);
    dims.candidate.push_back(static_cast<int>(cfg_.tables(t).dim()));
  }
  for (const auto& f : schema.contexts()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    field_tables_.context.push_back(t);
    dims.context.push_back(static_cast<int>(cfg_.tables(t).dim()));
  }
  for (const auto& table : cfg_.tables()) table_dims_.push_back(static_cast<int>(table.dim()));

  DIN_ASSIGN_OR_RETURN(backend_,
                       model::CreateBackend(tcfg_.backend(), cfg_.model(), dims, tcfg_.threads()));
  adam_ = std::make_unique<model::DenseAdam>(cfg_.model().dense_adam(), backend_->params().size());
  for (Slot& s : slots_) {
    s.builder = std::make_unique<model::InputBuilder>(field_tables_, table_dims_);
    s.pulls.resize(cfg_.tables_size());
  }
  push_grads_.resize(cfg_.tables_size());
  reduce_buf_.resize(backend_->grads().size() + kReduceExtras);
  summary_.backend = std::string(backend_->name());
  summary_.epochs = tcfg_.epochs();

  const auto& ck = tcfg_.checkpoint();
  if (ck.keep() < 1) return Status::InvalidArgument("trainer.checkpoint.keep must be >= 1");
  if (!(ck.every_minutes() >= 0))
    return Status::InvalidArgument("trainer.checkpoint.every_minutes must be >= 0");
  if (coll_->rank() == 0 && !tcfg_.metrics_path().empty()) {
    // A resumed run continues the file of the run it resumes.
    metrics_ = std::fopen(tcfg_.metrics_path().c_str(), tcfg_.resume_from().empty() ? "w" : "a");
    if (!metrics_)
      return Status::IoError("cannot create metrics file " + tcfg_.metrics_path() + ": " +
                             std::strerror(errno));
  }
  return Status::Ok();
}

Status Trainer::Prepass() {
  const double t0 = Now();
  DIN_ASSIGN_OR_RETURN(IdCounts counts, CountIds(cfg_.data(), cfg_.data().train_path(),
                                                 coll_->rank(), coll_->size()));
  std::vector<PsClient::Handle> handles;
  std::vector<uint64_t> ids;
  std::vector<uint32_t> n;
  for (size_t k = 0; k < counts.tables.size(); ++k) {
    const int t = FindTable(cfg_, counts.tables[k]);
    if (t < 0) return Status::InvalidArgument("PREPASS: unknown table " + counts.tables[k]);
    ids.clear();
    n.clear();
    auto flush = [&]() -> Status {
      if (ids.empty()) return Status::Ok();
      CountSpec spec{t, ids, n};
      DIN_ASSIGN_OR_RETURN(auto h, client_->PushCounts({&spec, 1}));
      // Requests are small and few; waiting for each keeps memory flat.
      DIN_RETURN_IF_ERROR(client_->Wait(h));
      ids.clear();
      n.clear();
      return Status::Ok();
    };
    for (const auto& [id, c] : counts.counts[k]) {
      ids.push_back(id);
      n.push_back(
          static_cast<uint32_t>(std::min<uint64_t>(c, std::numeric_limits<uint32_t>::max())));
      if (ids.size() >= kCountChunk) DIN_RETURN_IF_ERROR(flush());
    }
    DIN_RETURN_IF_ERROR(flush());
  }
  double totals[2] = {static_cast<double>(counts.samples), static_cast<double>(counts.bad_lines)};
  DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<double>(totals, 2)));
  // Every worker's counts are on the servers before anyone's first pull.
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  summary_.train_rows = static_cast<uint64_t>(totals[0]);
  summary_.prepass_seconds = Now() - t0;
  if (coll_->rank() == 0)
    LOG(INFO) << "PREPASS: counted IDs of " << summary_.train_rows << " training samples in "
              << Num(summary_.prepass_seconds, "%.2f") << " s";
  return Status::Ok();
}

Status Trainer::PushBatchCounts(const Slot& slot) {
  // Per table and unique row: the number of samples of the batch containing it.
  const model::ModelInput& in = slot.input;
  std::vector<std::vector<uint32_t>> counts(in.tables.size()), last(in.tables.size());
  for (size_t t = 0; t < in.tables.size(); ++t) {
    counts[t].assign(in.tables[t].rows, 0);
    last[t].assign(in.tables[t].rows, std::numeric_limits<uint32_t>::max());
  }
  const std::vector<model::FieldRows>* groups[] = {&in.user_fields, &in.candidate_fields,
                                                   &in.behavior_fields, &in.context_fields};
  for (uint32_t r = 0; r < in.batch_size; ++r)
    for (const auto* group : groups)
      for (const auto& field : *group)
        for (uint32_t i = field.offsets[r]; i < field.offsets[r + 1]; ++i) {
          const uint32_t row = field.rows[i];
          if (last[field.table][row] != r) {
            last[field.table][row] = r;
            ++counts[field.table][row];
          }
        }
  std::vector<CountSpec> specs;
  for (int t = 0; t < slot.builder->num_tables(); ++t)
    if (!counts[t].empty()) specs.push_back(CountSpec{t, slot.builder->unique_ids(t), counts[t]});
  if (specs.empty()) return Status::Ok();
  DIN_ASSIGN_OR_RETURN(auto h, client_->PushCounts(specs));
  // The pull that follows must see these counts (requests in flight may be reordered).
  return client_->Wait(h);
}

Status Trainer::Prepare(Slot* slot, Reader* reader, bool* exhausted) {
  slot->has_batch = false;
  if (*exhausted) return Status::Ok();
  DIN_ASSIGN_OR_RETURN(bool got, reader->NextBatch(&slot->batch));
  if (!got) {
    *exhausted = true;
    return Status::Ok();
  }
  slot->has_batch = true;
  DIN_RETURN_IF_ERROR(slot->builder->Build(slot->batch, &slot->input));
  if (tcfg_.mba_mode() == config::TrainerConfig::ONLINE)
    DIN_RETURN_IF_ERROR(PushBatchCounts(*slot));
  std::vector<PullSpec> specs;
  for (int t = 0; t < slot->builder->num_tables(); ++t) {
    slot->pulls[t].unique_ids.clear();
    slot->pulls[t].values.clear();
    slot->pulls[t].counts.clear();
    if (!slot->builder->unique_ids(t).empty())
      specs.push_back(PullSpec{t, slot->builder->unique_ids(t), &slot->pulls[t]});
  }
  slot->pull_start = Now();
  DIN_ASSIGN_OR_RETURN(slot->pull, client_->Pull(specs, wire::TRAIN));
  slot->pull_pending = true;
  return Status::Ok();
}

Status Trainer::WaitPull(Slot* slot) {
  if (!slot->pull_pending) return Status::Ok();
  slot->pull_pending = false;
  DIN_RETURN_IF_ERROR(client_->Wait(slot->pull));
  pull_ms_.push_back((Now() - slot->pull_start) * 1e3);
  for (int t = 0; t < slot->builder->num_tables(); ++t) {
    const auto& pull = slot->pulls[t];
    // The builder's IDs are already unique, so the client keeps their order.
    if (pull.unique_ids.size() != slot->input.tables[t].rows)
      return Status::Internal("pull of table " + cfg_.tables(t).name() + " returned " +
                              std::to_string(pull.unique_ids.size()) + " rows for " +
                              std::to_string(slot->input.tables[t].rows) + " IDs");
    slot->input.tables[t].data = pull.values.empty() ? nullptr : pull.values.data();
  }
  return Status::Ok();
}

Status Trainer::WaitPush() {
  if (!push_pending_) return Status::Ok();
  push_pending_ = false;
  DIN_RETURN_IF_ERROR(client_->Wait(push_));
  push_ms_.push_back((Now() - push_start_) * 1e3);
  return Status::Ok();
}

Status Trainer::PushGradients(Slot* slot) {
  std::vector<PushSpec> specs;
  for (int t = 0; t < slot->builder->num_tables(); ++t) {
    const TablePull& pull = slot->pulls[t];
    if (pull.unique_ids.empty()) continue;
    const auto grad = backend_->table_grad(t);
    auto& out = push_grads_[t];
    out.assign(grad.begin(), grad.end());
    AddMbaTerm(cfg_.tables(t).mba_lambda(), table_dims_[t], pull.values, pull.counts, out);
    if (push_observer_) push_observer_(t, pull.unique_ids, grad, out);
    specs.push_back(PushSpec{t, pull.unique_ids, out});
  }
  if (specs.empty()) return Status::Ok();
  push_start_ = Now();
  DIN_ASSIGN_OR_RETURN(push_, client_->Push(specs));
  push_pending_ = true;
  return Status::Ok();
}

Status Trainer::AverageRunningStats() {
  if (coll_->size() == 1) return Status::Ok();
  auto stats = backend_->running_stats();
  DIN_RETURN_IF_ERROR(coll_->AllReduceSum(stats));
  const float inv = 1.0f / static_cast<float>(coll_->size());
  for (float& v : stats) v *= inv;
  return Status::Ok();
}

Status Trainer::RunEpoch(uint32_t epoch, Reader* reader, bool resumed) {
  epoch_ = epoch;
  if (!resumed) {
    epoch_loss_sum_ = 0;
    epoch_samples_ = 0;
  }
  const auto& ck = tcfg_.checkpoint();
  const bool ckpt_on = !ck.dir().empty();
  std::string reader_state;  // staleness 1: the position before `next` was read
  bool exhausted = false;
  Slot* cur = &slots_[0];
  Slot* next = &slots_[1];
  DIN_RETURN_IF_ERROR(Prepare(cur, reader, &exhausted));
  const size_t n = backend_->grads().size();
  for (;;) {
    if (tcfg_.max_steps() > 0 && step_ >= tcfg_.max_steps()) break;
    const double step_start = Now();
    DIN_RETURN_IF_ERROR(WaitPull(cur));
    if (tcfg_.staleness() == 1) {
      // Batch t+1's pull may miss batch t's push, but not batch t-1's.
      DIN_RETURN_IF_ERROR(WaitPush());
      if (ckpt_on) reader_state = reader->SaveState();
      DIN_RETURN_IF_ERROR(Prepare(next, reader, &exhausted));
    }
    float loss = 0;
    if (cur->has_batch) {
      DIN_ASSIGN_OR_RETURN(loss, backend_->TrainStep(cur->input, cur->batch.labels));
      DIN_RETURN_IF_ERROR(PushGradients(cur));
      const auto grads = backend_->grads();
      std::copy(grads.begin(), grads.end(), reduce_buf_.begin());
      if (coll_->rank() == 0) {
        const auto logits = backend_->logits();
        for (size_t i = 0; i < cur->batch.size; ++i) {
          if (recent_labels_.size() < kRecent) {
            recent_labels_.push_back(cur->batch.labels[i]);
            recent_probs_.push_back(Sigmoid(logits[i]));
          } else {
            recent_labels_[recent_pos_] = cur->batch.labels[i];
            recent_probs_[recent_pos_] = Sigmoid(logits[i]);
            recent_pos_ = (recent_pos_ + 1) % kRecent;
          }
        }
      }
    } else {
      std::fill(reduce_buf_.begin(), reduce_buf_.begin() + static_cast<std::ptrdiff_t>(n), 0.0f);
    }
    reduce_buf_[n] = cur->has_batch ? 1.0f : 0.0f;
    reduce_buf_[n + 1] = cur->has_batch ? loss * static_cast<float>(cur->batch.size) : 0.0f;
    reduce_buf_[n + 2] = cur->has_batch ? static_cast<float>(cur->batch.size) : 0.0f;
    reduce_buf_[n + 3] = coll_->rank() == 0 && ckpt_on && ck.every_minutes() > 0 &&
                                 Now() - last_ckpt_time_ >= ck.every_minutes() * 60
                             ? 1.0f
                             : 0.0f;
    reduce_buf_[n + 4] = g_stop_requested.load(std::memory_order_relaxed) ? 1.0f : 0.0f;
    // The push travels while the dense gradients are averaged; its latency is taken
    // when it is seen complete.
    const double ar_start = Now();
    DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<float>(reduce_buf_)));
    allreduce_ms_.push_back((Now() - ar_start) * 1e3);
    const float active = reduce_buf_[n];
    if (active < 0.5f) break;  // every worker is out of data
    const float inv = 1.0f / active;
    auto grads = backend_->grads();
    for (size_t i = 0; i < n; ++i) grads[i] = reduce_buf_[i] * inv;
    adam_->Step(backend_->params(), grads);
    ++step_;
    const auto samples = static_cast<uint64_t>(reduce_buf_[n + 2] + 0.5f);
    epoch_loss_sum_ += reduce_buf_[n + 1];
    epoch_samples_ += samples;
    window_loss_sum_ += reduce_buf_[n + 1];
    window_samples_ += samples;
    summary_.samples_trained += samples;

    const bool stop = reduce_buf_[n + 4] > 0.5f;
    const bool checkpoint = ckpt_on && (stop || reduce_buf_[n + 3] > 0.5f ||
                                        (ck.every_steps() > 0 && step_ % ck.every_steps() == 0));
    const bool evaluate = tcfg_.eval_every_steps() > 0 && step_ % tcfg_.eval_every_steps() == 0;
    const double aside_start = Now();  // evaluation and checkpoint time is not step time
    if (tcfg_.staleness() == 0) {
      DIN_RETURN_IF_ERROR(WaitPush());
      // The evaluation (which averages the Dice statistics) comes before the checkpoint,
      // so a run resumed from it continues from the state this run continues from.
      if (evaluate) DIN_RETURN_IF_ERROR(MaybeEvaluate("step"));
      if (checkpoint) DIN_RETURN_IF_ERROR(WriteCheckpoint(reader->SaveState()));
      if (!stop) DIN_RETURN_IF_ERROR(Prepare(next, reader, &exhausted));
    } else {
      if (evaluate) DIN_RETURN_IF_ERROR(MaybeEvaluate("step"));
      if (checkpoint) DIN_RETURN_IF_ERROR(WriteCheckpoint(reader_state));
    }
    const double aside = evaluate || checkpoint ? Now() - aside_start : 0.0;
    const double step_s = Now() - step_start - aside;
    step_ms_.push_back(step_s * 1e3);
    if (metrics_) {
      std::string line =
          "{\"step\":" + std::to_string(step_) + ",\"epoch\":" + std::to_string(epoch + 1) +
          ",\"samples\":" + std::to_string(summary_.samples_trained) +
          ",\"loss\":" + Num(reduce_buf_[n + 1] / std::max(1.0f, reduce_buf_[n + 2])) +
          ",\"samples_per_s\":" + Num(samples / std::max(step_s, 1e-9), "%.1f") +
          ",\"step_ms\":" + Num(step_s * 1e3, "%.3f") +
          ",\"pull_ms\":" + Num(pull_ms_.empty() ? 0 : pull_ms_.back(), "%.3f") +
          ",\"push_ms\":" + Num(push_ms_.empty() ? 0 : push_ms_.back(), "%.3f") +
          ",\"allreduce_ms\":" + Num(allreduce_ms_.back(), "%.3f") + "}";
      WriteMetrics(line);
    }
    Progress(false);
    if (stop) {
      stop_ = true;
      break;
    }
    std::swap(cur, next);
  }
  // Leave nothing in flight: a pull sent ahead (staleness 1, or a max_steps stop).
  DIN_RETURN_IF_ERROR(WaitPush());
  for (Slot& s : slots_) DIN_RETURN_IF_ERROR(WaitPull(&s));
  // Without PREPASS the data size is known once the first pass is over.
  if (tcfg_.mba_mode() == config::TrainerConfig::ONLINE && epoch == 0)
    summary_.train_rows = epoch_samples_;
  summary_.final_train_loss = epoch_samples_ ? epoch_loss_sum_ / epoch_samples_ : NAN;
  return Status::Ok();
}

void Trainer::WriteMetrics(const std::string& json) {
  if (!metrics_) return;
  std::fputs(json.c_str(), metrics_);
  std::fputc('\n', metrics_);
}

void Trainer::Progress(bool force) {
  if (coll_->rank() != 0) return;
  const double now = Now();
  const bool bar = options_.progress_bar;
  if (!force && now - (bar ? last_bar_ : last_log_) < (bar ? 0.25 : tcfg_.log_every_seconds()))
    return;
  const double elapsed = now - train_start_ - summary_.eval_seconds;
  const double rate = (now - window_start_) > 0 ? window_samples_ / (now - window_start_) : 0;
  const double loss = window_samples_ ? window_loss_sum_ / window_samples_ : NAN;
  double auc = NAN;
  if (!recent_labels_.empty()) auc = Auc(recent_labels_, recent_probs_);
  const double total = static_cast<double>(summary_.train_rows) * tcfg_.epochs();
  double frac = NAN, eta = NAN;
  if (total > 0) {
    frac = std::min(1.0, summary_.samples_trained / total);
    const double overall = elapsed > 0 ? summary_.samples_trained / elapsed : 0;
    if (overall > 0) eta = (total - summary_.samples_trained) / overall;
  }
  if (bar) {
    last_bar_ = now;
    constexpr int kWidth = 30;
    const int filled = std::isfinite(frac) ? static_cast<int>(frac * kWidth) : 0;
    std::string b(static_cast<size_t>(filled), '=');
    b.resize(kWidth, ' ');
    std::fprintf(stderr, "\r[%s] %s epoch %u/%u  %.0f samples/s  loss %.4f  auc %.4f  ETA %s ",
                 b.c_str(), std::isfinite(frac) ? Num(frac * 100, "%3.0f%%").c_str() : " ?%",
                 epoch_ + 1, tcfg_.epochs(), rate, loss, auc,
                 std::isfinite(eta) ? Num(eta, "%.0fs").c_str() : "?");
    std::fflush(stderr);
  } else {
    last_log_ = now;
    LOG(INFO) << "epoch " << epoch_ + 1 << "/" << tcfg_.epochs() << " step " << step_ << " samples "
              << summary_.samples_trained
              << (std::isfinite(frac) ? " (" + Num(frac * 100, "%.0f") + "%)" : "") << "  "
              << Num(rate, "%.0f") << " samples/s  loss " << Num(loss, "%.4f") << "  train-auc "
              << Num(auc, "%.4f") << "  pull "
              << Num(pull_ms_.empty() ? 0 : pull_ms_.back(), "%.2f") << " ms  push "
              << Num(push_ms_.empty() ? 0 : push_ms_.back(), "%.2f") << " ms"
              << (std::isfinite(eta) ? "  ETA " + Num(eta, "%.0f") + " s" : "");
  }
  window_start_ = now;
  window_loss_sum_ = 0;
  window_samples_ = 0;
}

Status Trainer::MaybeEvaluate(const char* why) {
  if (cfg_.data().test_path().empty()) return Status::Ok();
  const double t0 = Now();
  DIN_ASSIGN_OR_RETURN(EvalMetrics m, Evaluate());
  const double secs = Now() - t0;
  summary_.eval_seconds += secs;
  // Progress rates count training time only.
  window_start_ += secs;
  if (coll_->rank() == 0) {
    if (options_.progress_bar) std::fputc('\n', stderr);
    LOG(INFO) << "evaluation (" << why << " " << (std::string(why) == "step" ? step_ : epoch_ + 1)
              << "): test AUC " << Num(m.auc, "%.4f") << "  GAUC " << Num(m.gauc, "%.4f")
              << "  logloss " << Num(m.logloss, "%.4f") << " over " << m.samples << " samples in "
              << Num(secs, "%.1f") << " s";
    WriteMetrics("{\"eval\":\"" + std::string(why) + "\",\"step\":" + std::to_string(step_) +
                 ",\"epoch\":" + std::to_string(epoch_ + 1) + ",\"test_auc\":" + Num(m.auc) +
                 ",\"test_gauc\":" + Num(m.gauc) + ",\"test_logloss\":" + Num(m.logloss) +
                 ",\"test_rows\":" + std::to_string(m.samples) + "}");
  }
  summary_.test = m;
  summary_.has_test = true;
  return Status::Ok();
}

Result<EvalMetrics> Trainer::Evaluate() {
  // Every worker's pushes are applied before anyone reads rows for evaluation.
  DIN_RETURN_IF_ERROR(WaitPush());
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  // The Dice running statistics differ per worker (each saw its own batches); evaluate
  // with their mean, the same on every worker.
  DIN_RETURN_IF_ERROR(AverageRunningStats());

  config::DataConfig data = cfg_.data();
  data.set_batch_size(tcfg_.eval_batch_size());
  DIN_ASSIGN_OR_RETURN(auto reader, Reader::OpenTest(data, coll_->rank(), coll_->size()));
  Batch batch;
  model::InputBuilder builder(field_tables_, table_dims_);
  model::ModelInput input;
  std::vector<TablePull> pulls(cfg_.tables_size());
  std::vector<float> logits;
  std::vector<Prediction> preds;
  for (;;) {
    DIN_ASSIGN_OR_RETURN(bool got, reader->NextBatch(&batch));
    if (!got) break;
    DIN_RETURN_IF_ERROR(builder.Build(batch, &input));
    std::vector<PullSpec> specs;
    for (int t = 0; t < builder.num_tables(); ++t)
      if (!builder.unique_ids(t).empty())
        specs.push_back(PullSpec{t, builder.unique_ids(t), &pulls[t]});
    DIN_ASSIGN_OR_RETURN(auto h, client_->Pull(specs, wire::EVAL));
    DIN_RETURN_IF_ERROR(client_->Wait(h));
    for (int t = 0; t < builder.num_tables(); ++t)
      input.tables[t].data = input.tables[t].rows ? pulls[t].values.data() : nullptr;
    logits.resize(batch.size);
    DIN_RETURN_IF_ERROR(backend_->Predict(input, logits));
    for (size_t i = 0; i < batch.size; ++i)
      preds.push_back(Prediction{batch.users[i], batch.labels[i], Sigmoid(logits[i])});
  }
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(coll_->GatherToRoot(std::as_bytes(std::span<const Prediction>(preds)), &all));
  EvalMetrics m;
  if (coll_->rank() == 0) {
    EvalAccumulator acc;
    const size_t n = all.size() / sizeof(Prediction);
    for (size_t i = 0; i < n; ++i) {
      Prediction p;
      std::memcpy(&p, all.data() + i * sizeof(Prediction), sizeof(p));
      acc.Add(p.user, p.label, p.prob);
    }
    m = acc.Compute();
  }
  return m;
}

Status Trainer::WriteCheckpoint(const std::string& reader_state) {
  const double t0 = Now();
  namespace fs = std::filesystem;
  // Every worker's pushes are applied before the tables are saved.
  DIN_RETURN_IF_ERROR(WaitPush());
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  std::error_code ec;
  const fs::path root = fs::absolute(tcfg_.checkpoint().dir(), ec);
  if (ec) return Status::IoError("checkpoint: cannot resolve " + tcfg_.checkpoint().dir());
  const std::string tmp = (root / (CheckpointName(step_) + ".tmp")).string();
  if (coll_->rank() == 0) {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) return Status::IoError("checkpoint: cannot create " + tmp + ": " + ec.message());
  }
  DIN_RETURN_IF_ERROR(coll_->Barrier());

  ckpt::WorkerState ws;
  ws.set_worker(static_cast<uint32_t>(coll_->rank()));
  ws.set_workers(static_cast<uint32_t>(coll_->size()));
  ws.set_step(step_);
  ws.set_epoch(epoch_);
  ws.set_reader(reader_state);
  ws.set_params(FloatBytes(backend_->params()));
  ws.set_adam_m(FloatBytes(adam_->first_moment()));
  ws.set_adam_v(FloatBytes(adam_->second_moment()));
  ws.set_adam_step(adam_->step());
  ws.set_running(FloatBytes(backend_->running_stats()));
  ws.set_epoch_loss_sum(epoch_loss_sum_);
  ws.set_epoch_samples(epoch_samples_);
  ws.set_samples_trained(summary_.samples_trained);
  ws.set_train_rows(summary_.train_rows);
  ws.set_backend(summary_.backend);
  std::string bytes;
  if (!ws.SerializeToString(&bytes)) return Status::Internal("checkpoint: cannot serialize");
  auto written = WriteCheckpointFile(tmp, WorkerStateName(coll_->rank()), bytes);
  if (!written.ok())
    return written.status().WithContext("checkpoint of worker " + std::to_string(coll_->rank()));
  const ckpt::CheckpointFile& file = *written;
  StateFileInfo info{file.bytes(), {}};
  std::memcpy(info.xxh64, file.xxh64().data(), sizeof(info.xxh64));
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(
      coll_->GatherToRoot(std::as_bytes(std::span<const StateFileInfo>(&info, 1)), &all));

  std::string final_path = (root / CheckpointName(step_)).string();
  if (coll_->rank() == 0) {
    DIN_RETURN_IF_ERROR(SaveTables(*client_, cfg_, tmp + "/tables", step_));
    ckpt::CheckpointManifest m;
    m.set_version(1);
    m.set_step(step_);
    m.set_epoch(epoch_);
    m.set_workers(static_cast<uint32_t>(coll_->size()));
    m.set_servers(static_cast<uint32_t>(options_.num_servers));
    m.set_unix_time(static_cast<int64_t>(std::time(nullptr)));
    for (int w = 0; w < coll_->size(); ++w) {
      StateFileInfo wi;
      std::memcpy(&wi, all.data() + static_cast<size_t>(w) * sizeof(wi), sizeof(wi));
      auto* f = m.add_files();
      f->set_name(WorkerStateName(w));
      f->set_bytes(wi.bytes);
      f->set_xxh64(std::string(wi.xxh64, sizeof(wi.xxh64)));
    }
    *m.mutable_config() = cfg_;
    DIN_ASSIGN_OR_RETURN(final_path, FinishCheckpoint(tmp, m, tcfg_.checkpoint().keep()));
  }
  // Nobody pushes again before the tables are on disk.
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  last_ckpt_step_ = step_;
  last_ckpt_time_ = Now();
  const double secs = Now() - t0;
  ++summary_.checkpoints;
  summary_.checkpoint_seconds += secs;
  summary_.last_checkpoint = final_path;
  window_start_ += secs;
  if (coll_->rank() == 0)
    LOG(INFO) << "checkpoint " << final_path << " (step " << step_ << ", epoch " << epoch_ + 1
              << ") written in " << Num(secs, "%.2f") << " s";
  return Status::Ok();
}

Status Trainer::Resume(Reader* reader) {
  // Worker 0 picks the checkpoint and loads the tables; every worker then restores its
  // own state file.
  std::string chosen;
  if (coll_->rank() == 0) {
    std::vector<std::string> refused;
    auto found = FindCheckpoint(tcfg_.resume_from(), &refused);
    Status st = found.status();
    if (st.ok()) {
      auto m = VerifyCheckpoint(*found);
      st = m.status();
      if (st.ok() && m->workers() != static_cast<uint32_t>(coll_->size()))
        st = Status::InvalidArgument(
            "resume: checkpoint " + *found + " was written by " + std::to_string(m->workers()) +
            " workers; resume it with the same number of workers (--workers " +
            std::to_string(m->workers()) + "); the servers may differ");
    }
    chosen = st.ok() ? "+" + *found : "-" + st.message();
  }
  DIN_RETURN_IF_ERROR(coll_->Broadcast(&chosen));
  if (chosen.empty() || chosen[0] != '+') return Status::InvalidArgument(chosen.substr(1));
  const std::string dir = chosen.substr(1);
  if (coll_->rank() == 0) {
    const double t0 = Now();
    DIN_ASSIGN_OR_RETURN(uint64_t rows, LoadTables(*client_, cfg_, dir + "/tables"));
    LOG(INFO) << "resume: loaded " << rows << " rows from " << dir << "/tables in "
              << Num(Now() - t0, "%.2f") << " s";
  }
  const std::string file = dir + "/" + WorkerStateName(coll_->rank());
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::NotFound("resume: cannot open " + file);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ckpt::WorkerState ws;
  if (!ws.ParseFromString(bytes)) return Status::InvalidArgument(file + ": cannot parse");
  if (ws.worker() != static_cast<uint32_t>(coll_->rank()) ||
      ws.workers() != static_cast<uint32_t>(coll_->size()))
    return Status::InvalidArgument(file + ": state of worker " + std::to_string(ws.worker()) +
                                   " of " + std::to_string(ws.workers()));
  DIN_RETURN_IF_ERROR(RestoreFloats(ws.params(), backend_->params(), "params", file));
  DIN_RETURN_IF_ERROR(RestoreFloats(ws.adam_m(), adam_->first_moment(), "adam_m", file));
  DIN_RETURN_IF_ERROR(RestoreFloats(ws.adam_v(), adam_->second_moment(), "adam_v", file));
  DIN_RETURN_IF_ERROR(RestoreFloats(ws.running(), backend_->running_stats(), "running", file));
  adam_->set_step(ws.adam_step());
  DIN_RETURN_IF_ERROR(reader->RestoreState(ws.reader()).WithContext(file));
  step_ = ws.step();
  epoch_ = ws.epoch();
  epoch_loss_sum_ = ws.epoch_loss_sum();
  epoch_samples_ = ws.epoch_samples();
  summary_.samples_trained = ws.samples_trained();
  summary_.train_rows = ws.train_rows();
  summary_.resumed_step = step_;
  summary_.resumed_from = dir;
  if (epoch_ >= tcfg_.epochs() && coll_->rank() == 0)
    LOG(INFO) << "resume: the checkpoint is at epoch " << epoch_ + 1 << " of " << tcfg_.epochs()
              << "; nothing left to train";
  // Rows are in place on every server before anyone pulls.
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  if (coll_->rank() == 0)
    LOG(INFO) << "resumed from " << dir << " at step " << step_ << ", epoch " << epoch_ + 1;
  return Status::Ok();
}

Status Trainer::Train() {
  DIN_ASSIGN_OR_RETURN(auto reader, Reader::OpenTrain(cfg_.data(), coll_->rank(), coll_->size()));
  const bool resumed = !tcfg_.resume_from().empty();
  if (resumed) {
    DIN_RETURN_IF_ERROR(Resume(reader.get()));
  } else if (tcfg_.mba_mode() == config::TrainerConfig::PREPASS) {
    DIN_RETURN_IF_ERROR(Prepass());
  }
  train_start_ = window_start_ = last_log_ = last_ckpt_time_ = Now();
  last_ckpt_step_ = step_;
  double eval_before = summary_.eval_seconds;
  const uint32_t first_epoch = epoch_;
  for (uint32_t e = first_epoch; e < tcfg_.epochs(); ++e) {
    const bool continued = resumed && e == first_epoch;
    if (e > 0 && !continued) reader->StartNextEpoch();
    DIN_RETURN_IF_ERROR(RunEpoch(e, reader.get(), continued));
    if (stop_) break;
    if (tcfg_.max_steps() > 0 && step_ >= tcfg_.max_steps()) {
      summary_.epochs = e + 1;
      break;
    }
    if (tcfg_.eval_every_epoch() && e + 1 < tcfg_.epochs())
      DIN_RETURN_IF_ERROR(MaybeEvaluate("epoch"));
  }
  Progress(true);
  if (options_.progress_bar && coll_->rank() == 0) std::fputc('\n', stderr);
  summary_.train_seconds =
      Now() - train_start_ - (summary_.eval_seconds - eval_before) - summary_.checkpoint_seconds;
  summary_.steps = step_;
  if (stop_) {
    // Stopped on request: the checkpoint just written holds everything; no evaluation
    // or dump (the run is not finished).
    summary_.stopped = true;
    summary_.stopped_checkpoint = summary_.last_checkpoint;
    if (metrics_) std::fflush(metrics_);
    return Status::Ok();
  }
  if (!tcfg_.checkpoint().dir().empty() && tcfg_.checkpoint().at_end() &&
      (step_ != last_ckpt_step_ || (summary_.checkpoints == 0 && !resumed)))
    DIN_RETURN_IF_ERROR(WriteCheckpoint(reader->SaveState()));
  double bad = static_cast<double>(reader->bad_lines());
  DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<double>(&bad, 1)));
  summary_.bad_lines = static_cast<uint64_t>(bad);
  DIN_RETURN_IF_ERROR(MaybeEvaluate("final"));
  if (!summary_.has_test) DIN_RETURN_IF_ERROR(AverageRunningStats());
  summary_.pull_ms_p50 = Percentile(pull_ms_, 0.5);
  summary_.pull_ms_p99 = Percentile(pull_ms_, 0.99);
  summary_.push_ms_p50 = Percentile(push_ms_, 0.5);
  summary_.push_ms_p99 = Percentile(push_ms_, 0.99);
  summary_.allreduce_ms_p50 = Percentile(allreduce_ms_, 0.5);
  summary_.step_ms_p50 = Percentile(step_ms_, 0.5);
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  const auto params = backend_->params();
  const auto running = backend_->running_stats();
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(params.data()),
                                           params.size_bytes())));
  h = Mix64(h ^ HashToken(std::string_view(reinterpret_cast<const char*>(running.data()),
                                           running.size_bytes())));
  summary_.dense_checksum = h;
  if (!tcfg_.dump_dir().empty()) {
    // Every push is applied before any lane starts writing its shards.
    DIN_RETURN_IF_ERROR(WaitPush());
    DIN_RETURN_IF_ERROR(coll_->Barrier());
    const double t0 = Now();
    if (coll_->rank() == 0)
      DIN_RETURN_IF_ERROR(DumpTables(*client_, cfg_, tcfg_.dump_dir(), step_));
    DIN_RETURN_IF_ERROR(coll_->Barrier());
    summary_.dump_dir = tcfg_.dump_dir();
    summary_.dump_seconds = Now() - t0;
  }
  if (metrics_) std::fflush(metrics_);
  return Status::Ok();
}

std::string SummaryJson(const TrainSummary& s, const config::TrainConfig& cfg, int workers,
                        int servers, const std::string& bayes_json) {
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
       ",\"server_rows\":" + std::to_string(s.server_rows) +
       ",\"skipped_keys\":" + std::to_string(s.skipped_keys) +
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
       ",\"batch_size\":" + std::to_string(cfg.data().batch_size()) + ",\"dense_checksum\":\"";
  char hex[24];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(s.dense_checksum));
  j += std::string(hex) + "\"}";
  return j;
}

}  // namespace din
