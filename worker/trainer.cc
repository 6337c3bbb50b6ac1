#include "worker/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>

#include <glog/logging.h>

#include "common/config.h"
#include "common/data/id_counts.h"
#include "common/data/schema.h"
#include "worker/dump_manifest.h"
#include "worker/step_control.h"
#include "worker/worker_state.h"

namespace din {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr uint64_t kCountChunk = 1 << 20;  // IDs per PREPASS count request

// Set by RequestStop (a signal handler may call it).
std::atomic<int> g_stop_requested{0};
static_assert(std::atomic<int>::is_always_lock_free);

DenseState DenseStateOf(model::ModelBackend& backend, model::DenseAdam& adam) {
  return DenseState{backend.params(), backend.running_stats(), &adam};
}

}  // namespace

void RequestStop() { g_stop_requested.store(1, std::memory_order_relaxed); }

Result<ModelShape> ModelShapeOf(const config::TrainConfig& cfg) {
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg.data()));
  // ValidateConfig refuses a field of an undeclared table; this keeps a config that
  // bypassed it from indexing out of range.
  auto table_of = [&](const FieldSpec& f) -> Result<int> {
    const int t = FindTable(cfg, f.table);
    if (t < 0)
      return Status::InvalidArgument("field '" + f.name + "' reads table '" + f.table +
                                     "', which the config does not declare (tables { name: \"" +
                                     f.table + "\" ... })");
    return t;
  };
  ModelShape shape;
  for (const auto& f : schema.users()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    shape.field_tables.user.push_back(t);
    shape.dims.user.push_back(static_cast<int>(cfg.tables(t).dim()));
  }
  for (const auto& f : schema.candidates()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    shape.field_tables.candidate.push_back(t);
    shape.dims.candidate.push_back(static_cast<int>(cfg.tables(t).dim()));
  }
  for (const auto& f : schema.contexts()) {
    DIN_ASSIGN_OR_RETURN(int t, table_of(f));
    shape.field_tables.context.push_back(t);
    shape.dims.context.push_back(static_cast<int>(cfg.tables(t).dim()));
  }
  for (const auto& table : cfg.tables()) shape.table_dims.push_back(static_cast<int>(table.dim()));
  return shape;
}

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

Status CheckDenseReplicas(Collective& coll, uint64_t checksum) {
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(coll.GatherToRoot(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(&checksum), sizeof checksum),
      &all));
  std::string verdict;  // empty: every worker agrees
  if (coll.rank() == 0) {
    if (all.size() != static_cast<size_t>(coll.size()) * sizeof checksum)
      return Status::Internal("dense checksums: gathered " + std::to_string(all.size()) +
                              " bytes from " + std::to_string(coll.size()) + " workers");
    std::vector<uint64_t> sums(coll.size());
    std::memcpy(sums.data(), all.data(), all.size());
    auto hex = [](uint64_t v) {
      char buf[17];
      std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
      return std::string(buf);
    };
    std::string differ;
    for (int r = 1; r < coll.size(); ++r)
      if (sums[r] != sums[0]) differ += " worker " + std::to_string(r) + " " + hex(sums[r]) + ";";
    if (!differ.empty())
      verdict = "dense weights differ between workers at the end of training: worker 0 " +
                hex(sums[0]) + ";" + differ.substr(0, differ.size() - 1);
  }
  DIN_RETURN_IF_ERROR(coll.Broadcast(&verdict));
  if (verdict.empty()) return Status::Ok();
  LOG(ERROR) << verdict;
  return Status::Internal(verdict);
}

Trainer::Trainer(const config::TrainConfig& cfg, PsClient* client, Collective* collective,
                 Options options)
    : cfg_(cfg),
      tcfg_(cfg.trainer()),
      client_(client),
      coll_(collective),
      options_(options),
      progress_(options.progress_bar, cfg.trainer().log_every_seconds()) {}

Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::Create(const config::TrainConfig& cfg, PsClient* client,
                                                 Collective* collective, Options options) {
  std::unique_ptr<Trainer> t(new Trainer(cfg, client, collective, options));
  DIN_RETURN_IF_ERROR(t->Init());
  return t;
}

Status Trainer::Init() {
  // ValidateConfig has checked the trainer options, the checkpoint options and that every
  // field reads a declared table; what it cannot know is checked here: training needs
  // data, and the reading options are the data library's (ValidateDataConfig).
  if (cfg_.data().train_path().empty())
    return Status::InvalidArgument("no training data: set data.train_path (or --train)");
  DIN_RETURN_IF_ERROR(ValidateDataConfig(cfg_.data()));
  if ((tcfg_.dump_every_steps() > 0 || tcfg_.dump_every_minutes() > 0) && tcfg_.dump_dir().empty())
    return Status::InvalidArgument(
        "trainer.dump_every_steps / dump_every_minutes need trainer.dump_dir (or --dump)");
  if (tcfg_.dump_every_minutes() < 0)
    return Status::InvalidArgument("trainer.dump_every_minutes must be >= 0");
  // A missing test set would otherwise surface only after training.
  if (!cfg_.data().test_path().empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(cfg_.data().test_path(), ec))
      return Status::NotFound("test data " + cfg_.data().test_path() + " does not exist");
  }
  DIN_ASSIGN_OR_RETURN(ModelShape shape, ModelShapeOf(cfg_));
  field_tables_ = shape.field_tables;
  table_dims_ = shape.table_dims;
  const model::FieldDims& dims = shape.dims;

  DIN_ASSIGN_OR_RETURN(backend_,
                       model::CreateBackend(tcfg_.backend(), cfg_.model(), dims, tcfg_.threads()));
  // staleness 0 promises reproducible runs: the CUDA backend then sums embedding
  // gradients in a fixed order (float atomics otherwise, a little faster).
  DIN_RETURN_IF_ERROR(backend_->SetDeterministic(tcfg_.staleness() == 0));
  adam_ = std::make_unique<model::DenseAdam>(cfg_.model().dense_adam(), backend_->params().size());
  if (coll_->size() > 1 && tcfg_.sparse_step() == config::TrainerConfig::SYNC &&
      backend_->layout().num_running() > 0) {
    // Dice layers: normalise with the global batch's statistics, so that W workers train
    // one worker's model.
    stats_sync_ = std::make_unique<CollectiveStatsSync>(coll_);
    const Status st = backend_->SetBatchStatsSync(stats_sync_.get());
    if (!st.ok()) {
      stats_sync_.reset();
      if (coll_->rank() == 0)
        LOG(WARNING) << st.message()
                     << ": with several workers Dice normalises with each worker's share of "
                        "the batch (docs/design.md §10)";
    }
  }
  evaluator_ =
      std::make_unique<Evaluator>(cfg_, field_tables_, table_dims_, client_, coll_, backend_.get());
  for (Slot& s : slots_) {
    s.builder = std::make_unique<model::InputBuilder>(field_tables_, table_dims_);
    s.pulls.resize(cfg_.tables_size());
  }
  push_grads_.resize(cfg_.tables_size());
  reduce_buf_.resize(backend_->grads().size() + StepControl::kFloats);
  summary_.backend = std::string(backend_->name());
  summary_.epochs = tcfg_.epochs();

  if (coll_->rank() == 0 && !tcfg_.metrics_path().empty())
    // A resumed run continues the file of the run it resumes.
    DIN_RETURN_IF_ERROR(metrics_.Open(tcfg_.metrics_path(), !tcfg_.resume_from().empty()));
  return Status::Ok();
}

Status Trainer::AdmissionFigures(StepFigures* f) {
  if (admission_last_.empty()) {
    for (int t = 0; t < cfg_.tables_size(); ++t) {
      const auto& tc = cfg_.tables(t);
      if (tc.admission().min_count() > 1 || tc.admission().probability() < 1.0 ||
          tc.ttl_steps() > 0)
        admission_tables_.push_back(t);
    }
    admission_last_.assign(cfg_.tables_size(), {0, 0, 0});
  }
  if (admission_tables_.empty()) return Status::Ok();
  // One STATS round trip per server, only for jobs with such tables.
  DIN_ASSIGN_OR_RETURN(auto stats, client_->Stats());
  std::vector<std::array<uint64_t, 3>> now(cfg_.tables_size(), {0, 0, 0});
  for (const auto& s : stats) {
    if (s.table() >= now.size()) continue;
    now[s.table()][0] += s.admitted_ids();
    now[s.table()][1] += s.rejected_ids() + s.rejected_keys();
    now[s.table()][2] += s.evicted_rows();
  }
  for (int t : admission_tables_) {
    StepFigures::Table x;
    x.name = cfg_.tables(t).name();
    x.admitted = now[t][0] - std::min(now[t][0], admission_last_[t][0]);
    x.rejected = now[t][1] - std::min(now[t][1], admission_last_[t][1]);
    x.evicted = now[t][2] - std::min(now[t][2], admission_last_[t][2]);
    f->tables.push_back(std::move(x));
  }
  admission_last_ = std::move(now);
  return Status::Ok();
}

Status Trainer::Prepass() {
  const double t0 = Now();
  // Schema::Tables() index -> config table.
  std::vector<int> table_index;
  {
    DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg_.data()));
    for (const auto& name : schema.Tables()) {
      const int t = FindTable(cfg_, name);
      if (t < 0) return Status::InvalidArgument("PREPASS: unknown table " + name);
      table_index.push_back(t);
    }
  }
  // Up to kCountsInFlight requests are in flight (PushCounts copies its input), so the
  // servers apply one while the next is sent; the servers add the counts of every flush,
  // so the sums are the whole partition's counts.
  constexpr size_t kCountsInFlight = 2;
  std::deque<PsClient::Handle> in_flight;
  auto sink = [&](int k, std::span<const uint64_t> ids, std::span<const uint32_t> n) -> Status {
    if (in_flight.size() >= kCountsInFlight) {
      DIN_RETURN_IF_ERROR(client_->Wait(in_flight.front()));
      in_flight.pop_front();
    }
    CountSpec spec{table_index[k], ids, n};
    // Gathered by the servers until ADMIT creates the rows (docs/design.md §5).
    DIN_ASSIGN_OR_RETURN(auto h, client_->PushCounts({&spec, 1}, /*prepass=*/true));
    in_flight.push_back(h);
    return Status::Ok();
  };
  Result<CountStats> scanned =
      CountIds(cfg_.data(), cfg_.data().train_path(), coll_->rank(), coll_->size(),
               tcfg_.prepass_memory_bytes(), kCountChunk, sink);
  for (PsClient::Handle h : in_flight) {
    const Status st = client_->Wait(h);
    if (scanned.ok() && !st.ok()) scanned = st;
  }
  DIN_ASSIGN_OR_RETURN(CountStats counts, std::move(scanned));
  summary_.prepass_flushes = counts.flushes;
  summary_.prepass_map_bytes = counts.map_bytes;
  double totals[2] = {static_cast<double>(counts.samples), static_cast<double>(counts.bad_lines)};
  DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<double>(totals, 2)));
  // Every worker's counts are on the servers; one worker has the rows created (most
  // frequent first, as admission and caps allow) before anyone's first pull.
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  if (coll_->rank() == 0) DIN_RETURN_IF_ERROR(client_->Admit());
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  summary_.train_rows = static_cast<uint64_t>(totals[0]);
  summary_.prepass_seconds = Now() - t0;
  if (coll_->rank() == 0)
    LOG(INFO) << "PREPASS: counted IDs of " << summary_.train_rows << " training samples in "
              << FormatNumber(summary_.prepass_seconds, "%.2f") << " s (count map of "
              << counts.map_bytes << " bytes, flushed " << counts.flushes << " times)";
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

Status Trainer::Prepare(Slot* slot, StepReader* reader, bool* exhausted) {
  slot->has_batch = false;
  if (*exhausted) return Status::Ok();
  DIN_ASSIGN_OR_RETURN(bool got, reader->NextStep(&slot->batch));
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
  latencies_.pull_ms.push_back((Now() - slot->pull_start) * 1e3);
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
  latencies_.push_ms.push_back((Now() - push_start_) * 1e3);
  return Status::Ok();
}

Status Trainer::PushGradients(Slot* slot) {
  const bool sync = tcfg_.sparse_step() == config::TrainerConfig::SYNC;
  const uint32_t n = slot->has_batch ? slot->batch.size : 0;
  std::vector<PushSpec> specs;
  for (int t = 0; t < slot->builder->num_tables() && n > 0; ++t) {
    const TablePull& pull = slot->pulls[t];
    if (pull.unique_ids.empty()) continue;
    const auto grad = backend_->table_grad(t);
    auto& out = push_grads_[t];
    if (sync) {
      // Sums over the share's samples; the lane divides by the global batch and adds the
      // MBA term once per distinct ID of the step.
      out.resize(grad.size());
      const float scale = static_cast<float>(n);
      for (size_t i = 0; i < grad.size(); ++i) out[i] = grad[i] * scale;
    } else {
      out.assign(grad.begin(), grad.end());
      AddMbaTerm(cfg_.tables(t).mba_lambda(), table_dims_[t], pull.values, pull.counts, out);
    }
    if (push_observer_) push_observer_(t, pull.unique_ids, grad, out);
    specs.push_back(PushSpec{t, pull.unique_ids, out});
  }
  if (sync) {
    wire::SyncStep step;
    step.set_step(sync_rounds_++);
    step.set_clock(step_);
    step.set_worker(static_cast<uint32_t>(coll_->rank()));
    step.set_workers(static_cast<uint32_t>(coll_->size()));
    step.set_samples(n);
    push_start_ = Now();
    DIN_ASSIGN_OR_RETURN(push_, client_->PushStep(specs, step));
    push_pending_ = true;
    return Status::Ok();
  }
  if (specs.empty()) return Status::Ok();
  push_start_ = Now();
  DIN_ASSIGN_OR_RETURN(push_, client_->Push(specs));
  push_pending_ = true;
  return Status::Ok();
}

Status Trainer::RunEpoch(uint32_t epoch, StepReader* reader, bool resumed) {
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
  const std::span<float> grad_buf = std::span<float>(reduce_buf_).first(n);
  const std::span<float> control_buf = std::span<float>(reduce_buf_).subspan(n);
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
    StepControl mine;
    if (cur->has_batch) {
      DIN_ASSIGN_OR_RETURN(float loss, backend_->TrainStep(cur->input, cur->batch.labels));
      if (stats_sync_ != nullptr) DIN_RETURN_IF_ERROR(stats_sync_->status());
      DIN_RETURN_IF_ERROR(PushGradients(cur));
      // The share's mean gradient times its samples: summed over the workers and divided
      // by the step's samples, the global batch's mean.
      const auto grads = backend_->grads();
      const float scale = static_cast<float>(cur->batch.size);
      for (size_t i = 0; i < n; ++i) grad_buf[i] = grads[i] * scale;
      if (coll_->rank() == 0)
        progress_.AddPredictions(
            std::span<const float>(cur->batch.labels).first(cur->batch.size),
            backend_->logits().first(cur->batch.size),
            std::span<const uint64_t>(cur->batch.users).first(cur->batch.size));
      mine.has_batch = 1.0f;
      mine.loss_sum = loss * static_cast<float>(cur->batch.size);
      mine.samples = static_cast<float>(cur->batch.size);
    } else {
      if (stats_sync_ != nullptr) {
        // The other workers' Dice statistics wait for this worker's (empty) share.
        cur->batch.Clear();
        DIN_RETURN_IF_ERROR(cur->builder->Build(cur->batch, &cur->input));
        DIN_RETURN_IF_ERROR(backend_->TrainStep(cur->input, {}).status());
        DIN_RETURN_IF_ERROR(stats_sync_->status());
      }
      if (tcfg_.sparse_step() == config::TrainerConfig::SYNC)
        DIN_RETURN_IF_ERROR(PushGradients(cur));  // the lanes wait for every worker
      std::fill(grad_buf.begin(), grad_buf.end(), 0.0f);
    }
    if (coll_->rank() == 0 && ckpt_on && ck.every_minutes() > 0 &&
        Now() - last_ckpt_time_ >= ck.every_minutes() * 60)
      mine.checkpoint_due = 1.0f;
    if (g_stop_requested.load(std::memory_order_relaxed)) mine.stop_requested = 1.0f;
    if (coll_->rank() == 0 && tcfg_.dump_every_minutes() > 0 &&
        Now() - last_dump_time_ >= tcfg_.dump_every_minutes() * 60)
      mine.dump_due = 1.0f;
    mine.PackInto(control_buf);
    // The push travels while the dense gradients are averaged; its latency is taken
    // when it is seen complete.
    const double ar_start = Now();
    DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<float>(reduce_buf_)));
    latencies_.allreduce_ms.push_back((Now() - ar_start) * 1e3);
    const StepControl all = StepControl::Unpack(control_buf);
    if (!all.any_batch()) break;  // every worker is out of data
    const float inv = 1.0f / std::max(1.0f, all.samples);
    auto grads = backend_->grads();
    for (size_t i = 0; i < n; ++i) grads[i] = grad_buf[i] * inv;
    adam_->Step(backend_->params(), grads);
    ++step_;
    const uint64_t samples = all.sample_count();
    epoch_loss_sum_ += all.loss_sum;
    epoch_samples_ += samples;
    progress_.AddSamples(all.loss_sum, samples);
    summary_.samples_trained += samples;
    summary_.run_samples_trained += samples;

    const bool stop = all.stop();
    const bool checkpoint = ckpt_on && (stop || all.checkpoint() ||
                                        (ck.every_steps() > 0 && step_ % ck.every_steps() == 0));
    const bool evaluate = tcfg_.eval_every_steps() > 0 && step_ % tcfg_.eval_every_steps() == 0;
    const bool dump =
        all.dump() || (tcfg_.dump_every_steps() > 0 && step_ % tcfg_.dump_every_steps() == 0);
    const double aside_start = Now();  // evaluation and checkpoint time is not step time
    if (tcfg_.staleness() == 0) {
      DIN_RETURN_IF_ERROR(WaitPush());
      // The evaluation (which averages the Dice statistics) comes before the checkpoint,
      // so a run resumed from it continues from the state this run continues from.
      if (evaluate) DIN_RETURN_IF_ERROR(MaybeEvaluate("step"));
      if (checkpoint) DIN_RETURN_IF_ERROR(WriteCheckpoint(reader->SaveState()));
      if (dump) DIN_RETURN_IF_ERROR(WritePeriodicDump());
      if (!stop) DIN_RETURN_IF_ERROR(Prepare(next, reader, &exhausted));
    } else {
      if (evaluate) DIN_RETURN_IF_ERROR(MaybeEvaluate("step"));
      if (checkpoint) DIN_RETURN_IF_ERROR(WriteCheckpoint(reader_state));
      if (dump) DIN_RETURN_IF_ERROR(WritePeriodicDump());
    }
    const double aside = evaluate || checkpoint || dump ? Now() - aside_start : 0.0;
    const double step_s = Now() - step_start - aside;
    latencies_.step_ms.push_back(step_s * 1e3);
    if (metrics_.is_open()) {
      StepFigures f;
      f.step = step_;
      f.epoch = epoch + 1;
      f.samples_trained = summary_.samples_trained;
      f.loss = all.loss_sum / std::max(1.0f, all.samples);
      f.samples_per_s = samples / std::max(step_s, 1e-9);
      f.step_ms = step_s * 1e3;
      f.pull_ms = Latencies::Last(latencies_.pull_ms);
      f.push_ms = Latencies::Last(latencies_.push_ms);
      f.allreduce_ms = latencies_.allreduce_ms.back();
      DIN_RETURN_IF_ERROR(AdmissionFigures(&f));
      metrics_.Write(StepMetricsJson(f));
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

void Trainer::Progress(bool force) {
  if (coll_->rank() != 0) return;
  ProgressLine line;
  if (!progress_.Due(force, Now(), epoch_ + 1, tcfg_.epochs(), step_, summary_.samples_trained,
                     summary_.train_rows, summary_.eval_seconds, latencies_, &line))
    return;
  if (progress_.bar()) {
    std::fputs(FormatProgressBar(line).c_str(), stderr);
    std::fflush(stderr);
  } else {
    LOG(INFO) << FormatProgressLog(line);
  }
}

Status Trainer::MaybeEvaluate(const char* why) {
  if (cfg_.data().test_path().empty()) return Status::Ok();
  const double t0 = Now();
  DIN_ASSIGN_OR_RETURN(EvalMetrics m, Evaluate());
  const double secs = Now() - t0;
  summary_.eval_seconds += secs;
  // Progress rates count training time only.
  progress_.ExcludeTime(secs);
  if (coll_->rank() == 0) {
    if (options_.progress_bar) std::fputc('\n', stderr);
    LOG(INFO) << "evaluation (" << why << " " << (std::string(why) == "step" ? step_ : epoch_ + 1)
              << "): test AUC " << FormatNumber(m.auc, "%.4f") << "  GAUC "
              << FormatNumber(m.gauc, "%.4f") << "  logloss " << FormatNumber(m.logloss, "%.4f")
              << " over " << m.samples << " samples in " << FormatNumber(secs, "%.1f") << " s";
    if (metrics_.is_open()) {
      // Worker 0's recent training predictions, next to the test metrics.
      const EvalMetrics train = progress_.RecentMetrics();
      metrics_.Write(EvalMetricsJson(why, step_, epoch_ + 1, m, &train));
    }
  }
  summary_.test = m;
  summary_.has_test = true;
  return Status::Ok();
}

Result<EvalMetrics> Trainer::Evaluate() {
  // This worker's pushes are applied before the evaluation's barrier.
  DIN_RETURN_IF_ERROR(WaitPush());
  return evaluator_->Run();
}

Status Trainer::WriteCheckpoint(const std::string& reader_state) {
  const double t0 = Now();
  DIN_RETURN_IF_ERROR(WaitPush());
  const TrainingPosition position{step_,
                                  epoch_,
                                  epoch_loss_sum_,
                                  epoch_samples_,
                                  summary_.samples_trained,
                                  summary_.train_rows};
  DIN_ASSIGN_OR_RETURN(std::string state,
                       EncodeWorkerState(coll_->rank(), coll_->size(), position, reader_state,
                                         summary_.backend, DenseStateOf(*backend_, *adam_)));
  DIN_ASSIGN_OR_RETURN(
      std::string final_path,
      din::WriteCheckpoint(*coll_, *client_, cfg_, options_.num_servers, step_, epoch_, state));
  last_ckpt_step_ = step_;
  last_ckpt_time_ = Now();
  const double secs = Now() - t0;
  ++summary_.checkpoints;
  summary_.checkpoint_seconds += secs;
  summary_.last_checkpoint = final_path;
  progress_.ExcludeTime(secs);
  if (coll_->rank() == 0)
    LOG(INFO) << "checkpoint " << final_path << " (step " << step_ << ", epoch " << epoch_ + 1
              << ") written in " << FormatNumber(secs, "%.2f") << " s";
  return Status::Ok();
}

Status Trainer::WritePeriodicDump() {
  const double t0 = Now();
  // Every push is applied before any lane starts writing its shards.
  DIN_RETURN_IF_ERROR(WaitPush());
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  char name[32];
  std::snprintf(name, sizeof(name), "dump-%012llu", static_cast<unsigned long long>(step_));
  if (coll_->rank() == 0) {
    DumpOptions options;
    options.mark = true;
    if (tcfg_.incremental()) {
      const bool delta = !dump_base_.empty();
      if (!delta) dump_base_ = name;
      options.delta = delta;
      options.base = dump_base_;
      options.parent = delta ? dump_parent_ : "";
    }
    const std::string dir = tcfg_.dump_dir() + "/" + name;
    DIN_RETURN_IF_ERROR(DumpTables(*client_, cfg_, dir, step_, options));
    uint64_t bytes = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec))
      if (e.is_regular_file(ec)) bytes += e.file_size(ec);
    LOG(INFO) << (options.delta ? "delta dump " : "dump ") << dir << " (step " << step_
              << "): " << bytes << " bytes in " << FormatNumber(Now() - t0, "%.2f") << " s";
  }
  dump_parent_ = name;
  last_dump_step_ = step_;
  last_dump_time_ = Now();
  DIN_RETURN_IF_ERROR(coll_->Barrier());
  progress_.ExcludeTime(Now() - t0);
  return Status::Ok();
}

Status Trainer::Resume(StepReader* reader) {
  DIN_ASSIGN_OR_RETURN(OpenedCheckpoint ckpt, OpenCheckpoint(*coll_, *client_, cfg_));
  DIN_ASSIGN_OR_RETURN(DecodedWorkerState ws,
                       DecodeWorkerState(ckpt.state, ckpt.file, coll_->rank(), coll_->size(),
                                         DenseStateOf(*backend_, *adam_)));
  step_ = ws.position.step;
  if (tcfg_.resume_new_data()) {
    // The model continues on other data: read from its start, at epoch 1.
    epoch_ = 0;
  } else {
    DIN_RETURN_IF_ERROR(reader->RestoreState(ws.reader_state).WithContext(ckpt.file));
    epoch_ = ws.position.epoch;
    epoch_loss_sum_ = ws.position.epoch_loss_sum;
    epoch_samples_ = ws.position.epoch_samples;
    summary_.samples_trained = ws.position.samples_trained;
    summary_.train_rows = ws.position.train_rows;
  }
  summary_.resumed_step = step_;
  summary_.resumed_from = ckpt.dir;
  if (coll_->rank() == 0) {
    if (epoch_ >= tcfg_.epochs())
      LOG(INFO) << "resume: the checkpoint is at epoch " << epoch_ + 1 << " of " << tcfg_.epochs()
                << "; nothing left to train";
    LOG(INFO) << "resumed from " << ckpt.dir << " at step " << step_ << ", epoch " << epoch_ + 1;
  }
  return Status::Ok();
}

Status Trainer::Train() {
  DIN_ASSIGN_OR_RETURN(auto reader, StepReader::Open(cfg_.data(), coll_->rank(), coll_->size()));
  const bool resumed = !tcfg_.resume_from().empty();
  const bool new_data = resumed && tcfg_.resume_new_data();
  if (resumed) DIN_RETURN_IF_ERROR(Resume(reader.get()));
  if ((!resumed || new_data) && tcfg_.mba_mode() == config::TrainerConfig::PREPASS) {
    DIN_RETURN_IF_ERROR(Prepass());
  }
  last_ckpt_time_ = Now();
  last_dump_time_ = last_ckpt_time_;
  progress_.Start(last_ckpt_time_);
  last_ckpt_step_ = step_;
  double eval_before = summary_.eval_seconds;
  const uint32_t first_epoch = epoch_;
  for (uint32_t e = first_epoch; e < tcfg_.epochs(); ++e) {
    const bool continued = resumed && !new_data && e == first_epoch;
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
  summary_.train_seconds = Now() - progress_.train_start() - (summary_.eval_seconds - eval_before) -
                           summary_.checkpoint_seconds;
  summary_.steps = step_;
  if (stop_) {
    // Stopped on request: the checkpoint just written holds everything; no evaluation
    // or dump (the run is not finished).
    summary_.stopped = true;
    summary_.stopped_checkpoint = summary_.last_checkpoint;
    metrics_.Flush();
    return Status::Ok();
  }
  if (!tcfg_.checkpoint().dir().empty() && tcfg_.checkpoint().at_end() &&
      (step_ != last_ckpt_step_ || (summary_.checkpoints == 0 && !resumed)))
    DIN_RETURN_IF_ERROR(WriteCheckpoint(reader->SaveState()));
  double bad = static_cast<double>(reader->bad_lines());
  DIN_RETURN_IF_ERROR(coll_->AllReduceSum(std::span<double>(&bad, 1)));
  summary_.bad_lines = static_cast<uint64_t>(bad);
  DIN_RETURN_IF_ERROR(MaybeEvaluate("final"));
  if (!summary_.has_test)
    DIN_RETURN_IF_ERROR(AverageRunningStats(*coll_, backend_->running_stats()));
  SetLatencyPercentiles(latencies_, &summary_);
  summary_.dense_checksum = DenseChecksum(backend_->params(), backend_->running_stats());
  DIN_RETURN_IF_ERROR(CheckDenseReplicas(*coll_, summary_.dense_checksum));
  // The periodic dumps end at the final step (a base plus deltas merge to the dump below).
  const bool periodic = tcfg_.dump_every_steps() > 0 || tcfg_.dump_every_minutes() > 0;
  if (periodic && last_dump_step_ != step_) DIN_RETURN_IF_ERROR(WritePeriodicDump());
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
  metrics_.Flush();
  return Status::Ok();
}

}  // namespace din
