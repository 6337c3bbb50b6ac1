#include "ps/lane_handler.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include <glog/logging.h>

#include "common/hash.h"
#include "common/net/wire.h"

namespace din {

TableSpec::TableSpec(const config::TableConfig& cfg, bool online_counts)
    : name(cfg.name()),
      dim(cfg.dim()),
      shards(cfg.shards()),
      expected_rows(cfg.expected_rows_per_shard()),
      max_rows(cfg.max_rows_per_shard()),
      mba_lambda(cfg.mba_lambda()),
      when_full(cfg.when_full()),
      storage(cfg.storage() == config::TableConfig::FP16   ? WeightFormat::kFp16
              : cfg.storage() == config::TableConfig::BF16 ? WeightFormat::kBf16
                                                           : WeightFormat::kFp32),
      rounding_key(Mix64(cfg.seed() ^ 0x5eed0f5a0d1e57ULL)),
      min_count(cfg.admission().min_count()),
      probability(cfg.admission().probability()),
      online_admission(online_counts && (min_count > 1 || cfg.admission().probability() < 1.0)),
      sketch_bytes(cfg.admission().sketch_bytes() / std::max<uint32_t>(cfg.shards(), 1)),
      sketch_depth(cfg.admission().sketch_depth()),
      admission_key(Mix64(cfg.seed() ^ 0xad3155109bULL)),
      shared_default(cfg.admission().default_row() == config::AdmissionConfig::SHARED),
      ttl_steps(cfg.ttl_steps()),
      optimizer(SparseOptimizer::Create(cfg.optimizer())),
      initializer(cfg.initializer(), cfg.seed()) {}

struct LaneHandler::Segments {
  std::vector<int> table;
  std::vector<uint32_t> shard;
  std::vector<uint64_t> count;
  uint64_t total_keys = 0;
  uint64_t total_floats = 0;
};

LaneHandler::LaneHandler(const std::vector<TableSpec>& tables, const Placement& placement,
                         int server, int lane, uint64_t max_request_keys, MemoryBudget* budget)
    : tables_(tables),
      placement_(placement),
      server_(server),
      lane_(lane),
      max_request_keys_(max_request_keys),
      budget_(budget),
      frame_pool_(FramePool::Create()) {
  shards_.resize(tables.size());
  skipped_.resize(tables.size());
  pending_keys_.resize(tables.size());
  full_logged_.assign(tables.size(), false);
  sync_sums_.resize(tables.size());
  prepass_counts_.resize(tables.size());
  admitted_ids_.resize(tables.size());
  rejected_ids_.resize(tables.size());
  rejected_keys_.resize(tables.size());
  admission_closed_.assign(tables.size(), false);
  sketches_.resize(tables.size());
  default_rows_.resize(tables.size());
  last_push_.resize(tables.size());
  evicted_.resize(tables.size());
  evict_word_.resize(tables.size());
  evict_cursor_.resize(tables.size());
  evict_pass_.resize(tables.size());
  uint32_t max_dim = 0;
  for (const TableSpec& spec : tables) max_dim = std::max(max_dim, spec.dim);
  weight_scratch_.resize(max_dim);
  default_grad_.resize(max_dim);
  changed_.resize(tables.size());
  marked_rows_.resize(tables.size());
  for (size_t t = 0; t < tables.size(); ++t) {
    shards_[t].resize(tables[t].shards);
    changed_[t].resize(tables[t].shards);
    marked_rows_[t].assign(tables[t].shards, 0);
    skipped_[t].assign(tables[t].shards, 0);
    pending_keys_[t].assign(tables[t].shards, 0);
    prepass_counts_[t].resize(tables[t].shards);
    admitted_ids_[t].assign(tables[t].shards, 0);
    rejected_ids_[t].assign(tables[t].shards, 0);
    rejected_keys_[t].assign(tables[t].shards, 0);
    default_rows_[t].resize(tables[t].shards);
    sketches_[t].resize(tables[t].shards);
    last_push_[t].resize(tables[t].shards);
    evicted_[t].assign(tables[t].shards, 0);
    evict_word_[t].resize(tables[t].shards);
    evict_cursor_[t].assign(tables[t].shards, 0);
    evict_pass_[t].resize(tables[t].shards);
    any_ttl_ = any_ttl_ || tables[t].ttl_steps > 0;
    any_evict_ = any_evict_ || tables[t].evicts();
    for (uint32_t s = 0; s < tables[t].shards; ++s) {
      const uint32_t g = placement.GlobalShard(static_cast<int>(t), s);
      if (placement.ServerOf(g) == server && placement.LaneOf(g) == lane) {
        shards_[t][s] = std::make_unique<ShardStore>(
            tables[t].dim, tables[t].optimizer->StateFloats(tables[t].dim), tables[t].expected_rows,
            tables[t].max_rows, tables[t].storage);
        if (tables[t].online_admission)
          sketches_[t][s] = std::make_unique<AdmissionSketch>(
              tables[t].sketch_bytes, tables[t].sketch_depth, tables[t].admission_key + s);
        if (tables[t].shared_default) {
          // The shared default row starts as the initializer's row of the reserved key
          // UINT64_MAX, with fresh optimizer state.
          const TableSpec& spec = tables[t];
          std::vector<float>& row = default_rows_[t][s];
          row.assign(spec.dim + spec.optimizer->StateFloats(spec.dim), 0.0f);
          spec.initializer.Fill(UINT64_MAX, row.data(), spec.dim);
          spec.optimizer->InitState(row.data() + spec.dim, spec.dim);
        }
      }
    }
  }
}

namespace {

size_t FramesFor(wire::Op op) {
  switch (op) {
    case wire::PULL:
      return 2;
    case wire::PUSH:
    case wire::PUSH_COUNTS:
      return 3;
    case wire::STATS:
    case wire::PING:
    case wire::DUMP:
    case wire::LOAD:
    case wire::ADMIT:
      return 1;
    default:
      return 0;
  }
}

std::string OpName(wire::Op op) { return wire::Op_Name(op); }

}  // namespace

Status LaneHandler::Validate(const wire::RequestHeader& h, std::vector<zmq::message_t>& frames,
                             Segments* segs) {
  if (h.version() != wire::CURRENT_VERSION)
    return Status::InvalidArgument("unsupported wire version " + std::to_string(h.version()) +
                                   " (this server speaks " + std::to_string(wire::CURRENT_VERSION) +
                                   ")");
  const size_t want = FramesFor(h.op());
  if (want == 0) return Status::InvalidArgument("unknown op " + std::to_string(h.op()));
  if (h.has_sync()) {
    if (h.op() != wire::PUSH)
      return Status::InvalidArgument("a synchronous step is only valid on PUSH, not " +
                                     OpName(h.op()));
    DIN_RETURN_IF_ERROR(CheckSync(h.sync()));
  }
  if (h.prepass() && h.op() != wire::PUSH_COUNTS)
    return Status::InvalidArgument("prepass is only valid on PUSH_COUNTS, not " + OpName(h.op()));
  DIN_RETURN_IF_ERROR(CheckRequestPrecision(h));
  if (frames.size() != want)
    return Status::InvalidArgument(OpName(h.op()) + " needs " + std::to_string(want) +
                                   " frames, got " + std::to_string(frames.size()));
  if (want == 1) {
    // Only PULL, PUSH and PUSH_COUNTS carry keys; segments on another op are refused
    // rather than ignored.
    if (h.segments_size() > 0)
      return Status::InvalidArgument(OpName(h.op()) + " carries no keys but declares " +
                                     std::to_string(h.segments_size()) + " segment(s)");
    return Status::Ok();
  }

  for (const auto& seg : h.segments()) {
    if (seg.table() >= tables_.size())
      return Status::InvalidArgument("unknown table " + std::to_string(seg.table()));
    const TableSpec& spec = tables_[seg.table()];
    if (seg.shard() >= spec.shards)
      return Status::InvalidArgument("shard " + std::to_string(seg.shard()) +
                                     " out of range for table " + spec.name + " (" +
                                     std::to_string(spec.shards) + " shards)");
    if (shards_[seg.table()][seg.shard()] == nullptr)
      return Status::InvalidArgument("shard " + std::to_string(seg.shard()) + " of table " +
                                     spec.name + " is not served by server " +
                                     std::to_string(server_) + " lane " + std::to_string(lane_));
    if (seg.count() > max_request_keys_ || segs->total_keys + seg.count() > max_request_keys_)
      return Status::InvalidArgument("request larger than ps.max_request_keys = " +
                                     std::to_string(max_request_keys_) + " keys");
    segs->table.push_back(static_cast<int>(seg.table()));
    segs->shard.push_back(seg.shard());
    segs->count.push_back(seg.count());
    segs->total_keys += seg.count();
    segs->total_floats += seg.count() * spec.dim;
  }
  if (frames[1].size() != segs->total_keys * sizeof(uint64_t))
    return Status::InvalidArgument("keys frame has " + std::to_string(frames[1].size()) +
                                   " bytes, segments declare " + std::to_string(segs->total_keys) +
                                   " keys");
  const uint64_t value_bytes = WeightBytes(RequestPrecision(h));
  if (h.op() == wire::PUSH && frames[2].size() != segs->total_floats * value_bytes)
    return Status::InvalidArgument("gradient frame has " + std::to_string(frames[2].size()) +
                                   " bytes, expected " +
                                   std::to_string(segs->total_floats * value_bytes) + " (" +
                                   PrecisionName(h.precision()) + ")");
  if (h.op() == wire::PUSH_COUNTS && frames[2].size() != segs->total_keys * sizeof(uint32_t))
    return Status::InvalidArgument("count frame has " + std::to_string(frames[2].size()) +
                                   " bytes, expected " +
                                   std::to_string(segs->total_keys * sizeof(uint32_t)));

  // Every key must belong to its segment's shard: checked before anything is applied,
  // so that a bad request changes no row.
  std::span<const uint64_t> keys = FrameAs<uint64_t>(frames[1], &key_scratch_);
  size_t k = 0;
  for (size_t s = 0; s < segs->table.size(); ++s) {
    const uint32_t shards = tables_[segs->table[s]].shards;
    for (uint64_t i = 0; i < segs->count[s]; ++i, ++k) {
      if (ShardOf(keys[k], shards) != segs->shard[s])
        return Status::InvalidArgument(
            "key " + std::to_string(keys[k]) + " does not belong to shard " +
            std::to_string(segs->shard[s]) + " of table " + tables_[segs->table[s]].name);
    }
  }
  return Status::Ok();
}

Status LaneHandler::CapError(int table, uint32_t shard, uint64_t adding) const {
  const TableSpec& spec = tables_[table];
  const ShardStore* store = shards_[table][shard].get();
  return Status::ResourceExhausted(
      "table " + spec.name + " shard " + std::to_string(shard) + " on server " +
      std::to_string(server_) + " is full: max_rows_per_shard = " + std::to_string(spec.max_rows) +
      " rows (when_full: FAIL), and a request would add " + std::to_string(adding) +
      " new rows to its " + std::to_string(store->size()) +
      "; raise max_rows_per_shard or shards, or set when_full: SKIP_NEW");
}

void LaneHandler::RunsOf(const Segments& segs, std::span<const uint64_t> keys,
                         std::span<const uint32_t> counts, std::vector<KeyRun>* runs) {
  size_t k = 0;
  for (size_t s = 0; s < segs.table.size(); k += segs.count[s], ++s)
    runs->push_back({static_cast<uint32_t>(segs.table[s]), segs.shard[s],
                     keys.subspan(k, segs.count[s]),
                     counts.empty() ? counts : counts.subspan(k, segs.count[s])});
}

template <typename Want>
void LaneHandler::CollectNewKeys(std::span<const KeyRun> runs, Want&& want) {
  new_keys_.clear();
  sketch_overlay_.clear();
  std::set<std::pair<uint32_t, uint64_t>> admitted;  // online: a repeat finds its new row
  for (const KeyRun& run : runs) {
    if (!want(run.table)) continue;
    const TableSpec& spec = tables_[run.table];
    if (spec.online_admission && run.counts.empty()) continue;  // creates no rows
    const AdmissionSketch* sketch = sketches_[run.table][run.shard].get();
    shards_[run.table][run.shard]->FindEach(run.keys, [&](size_t i, uint32_t row) {
      if (row != ShardStore::kNoRow) return;
      if (!spec.online_admission) {
        new_keys_.push_back({run.table, run.shard, run.keys[i]});
        return;
      }
      if (admitted.count({run.table, run.keys[i]})) return;
      // The conservative update PushCounts will make, on an overlay of the counters.
      uint32_t est = UINT32_MAX;
      uint64_t cells[AdmissionSketch::kMaxDepth];
      for (uint32_t d = 0; d < sketch->depth(); ++d) {
        cells[d] = sketch->Cell(run.keys[i], d);
        auto it = sketch_overlay_.find(cells[d]);
        est = std::min(est, it != sketch_overlay_.end() ? it->second : sketch->counter(cells[d]));
      }
      const uint32_t c = run.counts[i];
      const uint32_t next = est > UINT32_MAX - c ? UINT32_MAX : est + c;
      for (uint32_t d = 0; d < sketch->depth(); ++d) {
        auto [it, fresh] = sketch_overlay_.try_emplace(cells[d], sketch->counter(cells[d]));
        it->second = std::max(it->second, next);
      }
      if (Admits(spec, run.keys[i], est, next)) {
        new_keys_.push_back({run.table, run.shard, run.keys[i]});
        admitted.insert({run.table, run.keys[i]});
      }
    });
  }
  std::sort(new_keys_.begin(), new_keys_.end());
  new_keys_.erase(std::unique(new_keys_.begin(), new_keys_.end()), new_keys_.end());
}

template <typename Fn>
Status LaneHandler::ForEachNewKeyGroup(Fn&& fn) const {
  for (size_t i = 0; i < new_keys_.size();) {
    size_t j = i;
    while (j < new_keys_.size() && new_keys_[j].table == new_keys_[i].table &&
           new_keys_[j].shard == new_keys_[i].shard)
      ++j;
    DIN_RETURN_IF_ERROR(fn(static_cast<int>(new_keys_[i].table), new_keys_[i].shard, j - i));
    i = j;
  }
  return Status::Ok();
}

bool LaneHandler::Admits(const TableSpec& spec, uint64_t key, uint64_t from, uint64_t to) {
  from = std::max<uint64_t>(from, std::max<uint32_t>(spec.min_count, 1) - 1);
  if (to <= from) return false;
  if (spec.probability >= 1.0) return true;
  const uint64_t last = std::min(to, from + kMaxDraws);
  for (uint64_t m = from + 1; m <= last; ++m)
    if (UniformAt(spec.admission_key ^ key, m) < spec.probability) return true;
  return to > last;
}

Status LaneHandler::CheckCaps(const Segments& segs, std::span<const uint64_t> keys,
                              std::span<const uint32_t> counts) {
  // Cheap unless the request could fill a shard: a shard is looked at only when its
  // rows plus all the request's keys for it exceed the cap (a shard may be named by
  // more than one segment, so the keys are summed per shard first).
  auto capped = [&](uint32_t t) { return FailCapped(t); };
  bool near = false;
  for (size_t s = 0; s < segs.table.size(); ++s) {
    if (!capped(segs.table[s])) continue;
    uint64_t& pending = pending_keys_[segs.table[s]][segs.shard[s]];
    pending += segs.count[s];
    near = near || shards_[segs.table[s]][segs.shard[s]]->size() + pending >
                       tables_[segs.table[s]].max_rows;
  }
  for (size_t s = 0; s < segs.table.size(); ++s)
    if (capped(segs.table[s])) pending_keys_[segs.table[s]][segs.shard[s]] = 0;
  if (!near) return Status::Ok();

  // Exact check: the distinct new keys per capped shard must fit.
  runs_.clear();
  RunsOf(segs, keys, counts, &runs_);
  CollectNewKeys(runs_, capped);
  return ForEachNewKeyGroup([&](int t, uint32_t shard, uint64_t n) {
    if (shards_[t][shard]->size() + n > tables_[t].max_rows) return CapError(t, shard, n);
    return Status::Ok();
  });
}

bool LaneHandler::FailCapped(uint32_t table) const {
  const TableSpec& spec = tables_[table];
  // A closed table creates no rows (Materialize).
  return spec.max_rows != 0 && spec.when_full == config::TableConfig::FAIL &&
         !admission_closed_[table];
}

uint64_t LaneHandler::RowCost(int table) const {
  for (const auto& store : shards_[table])
    if (store != nullptr) return store->row_bytes() + 5;  // 4-byte slots at load 0.8
  return 0;
}

void LaneHandler::PublishMemory() {
  if (budget_ == nullptr) return;
  int64_t bytes = 0;
  for (const auto& table : shards_)
    for (const auto& store : table)
      if (store != nullptr) bytes += static_cast<int64_t>(store->MemoryBytes());
  for (const auto& table : sketches_)
    for (const auto& sketch : table)
      if (sketch != nullptr) bytes += static_cast<int64_t>(sketch->MemoryBytes());
  budget_->used.fetch_add(bytes - published_bytes_, std::memory_order_relaxed);
  published_bytes_ = bytes;
}

Status LaneHandler::BudgetError(int table, int64_t used, const std::string& adding) const {
  return Status::ResourceExhausted(
      "table " + tables_[table].name + " on server " + std::to_string(server_) +
      ": the server's memory budget ps.memory_limit_bytes = " + std::to_string(budget_->limit) +
      " bytes is reached: its tables hold " + std::to_string(used) + " bytes and " + adding +
      "; raise ps.memory_limit_bytes, add servers, or set when_full: SKIP_NEW");
}

int64_t LaneHandler::IndexGrowth(const ShardStore& store, uint64_t adding) {
  if (static_cast<double>(store.size() + adding) < 0.8 * static_cast<double>(store.slot_capacity()))
    return 0;
  return static_cast<int64_t>(store.slot_capacity() * 6 + adding * 2);
}

Status LaneHandler::CheckBudget(const Segments& segs, std::span<const uint64_t> keys,
                                std::span<const uint32_t> counts) {
  budget_skip_ = false;
  if (budget_ == nullptr || budget_->limit == 0) return Status::Ok();
  const int64_t used = budget_->used.load(std::memory_order_relaxed);
  const int64_t limit = static_cast<int64_t>(budget_->limit);
  int64_t worst = 0;
  for (size_t s = 0; s < segs.table.size(); ++s) {
    const ShardStore& store = *shards_[segs.table[s]][segs.shard[s]];
    worst += static_cast<int64_t>(segs.count[s] * RowCost(segs.table[s])) +
             IndexGrowth(store, segs.count[s]);
  }
  if (used + worst <= limit) return Status::Ok();

  // Exact: the distinct new keys per shard.
  runs_.clear();
  RunsOf(segs, keys, counts, &runs_);
  CollectNewKeys(runs_, [](uint32_t) { return true; });
  int64_t need_fail = 0, need_skip = 0;
  int fail_table = -1;
  uint64_t fail_rows = 0;
  (void)ForEachNewKeyGroup([&](int t, uint32_t shard, uint64_t n) {
    const int64_t bytes = static_cast<int64_t>(n * RowCost(t)) + IndexGrowth(*shards_[t][shard], n);
    if (tables_[t].skips_when_full()) {
      need_skip += bytes;
    } else {
      need_fail += bytes;
      if (fail_table < 0 || t == fail_table) {
        fail_table = t;
        fail_rows += n;
      }
    }
    return Status::Ok();
  });
  if (used + need_fail + need_skip <= limit) return Status::Ok();
  if (need_fail > 0 && used + need_fail > limit)
    return BudgetError(fail_table, used,
                       "a request would add " + std::to_string(fail_rows) + " new rows (about " +
                           std::to_string(need_fail) + " bytes; when_full: FAIL)");
  budget_skip_ = true;
  return Status::Ok();
}

uint32_t LaneHandler::Materialize(int table, uint32_t shard, ShardStore* store, uint64_t key,
                                  Status* status, bool admitted) {
  const TableSpec& spec = tables_[table];
  if (spec.online_admission && !admitted) return store->Find(key);  // rows come from counts
  if (admission_closed_[table]) {
    const uint32_t row = store->Find(key);
    if (row == ShardStore::kNoRow) ++rejected_keys_[table][shard];
    return row;
  }
  if (budget_skip_ && spec.skips_when_full()) {
    const uint32_t row = store->Find(key);
    if (row != ShardStore::kNoRow) return row;
    ++skipped_[table][shard];
    if (!full_logged_[table]) {
      full_logged_[table] = true;
      LOG(WARNING) << "server " << server_ << " lane " << lane_ << ": table " << spec.name
                   << ": the server's memory budget ps.memory_limit_bytes = " << budget_->limit
                   << " bytes is reached; new IDs get no row (when_full: SKIP_NEW), counted in "
                      "STATS skipped_keys (logged once per table and lane)";
    }
    return ShardStore::kNoRow;
  }
  if (store->full() && spec.skips_when_full() && spec.max_rows != 0) {
    // Under EVICT_* the shard is full only until the eviction pass after this request.
    const uint32_t row = store->Find(key);
    if (row != ShardStore::kNoRow) return row;
    ++skipped_[table][shard];
    if (!full_logged_[table] && spec.when_full == config::TableConfig::SKIP_NEW) {
      full_logged_[table] = true;
      LOG(WARNING) << "server " << server_ << " lane " << lane_ << ": table " << spec.name
                   << " shard " << shard << " holds max_rows_per_shard = " << spec.max_rows
                   << " rows; new IDs get no row (when_full: SKIP_NEW), counted in STATS "
                      "skipped_keys (logged once per table and lane)";
    }
    return ShardStore::kNoRow;
  }
  bool inserted = false;
  Result<uint32_t> row = store->FindOrInsert(key, &inserted);
  if (!row.ok()) {
    *status = spec.max_rows != 0 ? CapError(table, shard, 1)
                                 : row.status().WithContext("table " + spec.name);
    return ShardStore::kNoRow;
  }
  if (inserted) {
    Touch(table, shard, *row, /*created=*/true);
    MarkChanged(table, shard, *row);  // a row number freed by eviction may be taken again
    spec.initializer.Fill(key, weight_scratch_.data(), spec.dim);
    store->SetWeights(*row, weight_scratch_.data());
    spec.optimizer->InitState(store->State(*row), spec.dim);
  }
  return *row;
}

void LaneHandler::ApplyGradient(const TableSpec& spec, ShardStore* store, uint32_t row,
                                const float* g, uint64_t clock) {
  if (spec.storage == WeightFormat::kFp32) {
    spec.optimizer->Apply(store->Weights(row), store->State(row), g, spec.dim);
    return;
  }
  float* w = weight_scratch_.data();
  store->GetWeights(row, w);
  float* state = store->State(row);
  spec.optimizer->Apply(w, state, g, spec.dim);
  // The rounding draws: a pure function of (table, key, clock); every update of a row
  // has a new clock, so its draws are fresh, and a rerun of the same requests stores the
  // same bits (docs/design.md §5).
  store->SetWeightsRounded(row, w, spec.rounding_key ^ Mix64(store->Key(row) ^ Mix64(clock)));
}

Status LaneHandler::Pull(const wire::RequestHeader& h, const Segments& segs,
                         std::span<const uint64_t> keys, std::vector<zmq::message_t>* reply) {
  // Large frames come from the lane's pool (aligned); small inline ones are written bytewise.
  // Values go out in the request's precision (docs/design.md §4): rows stored in that
  // format are copied as they are, others rounded to nearest even.
  const WeightFormat wire = RequestPrecision(h);
  zmq::message_t values = frame_pool_->Get(segs.total_floats * WeightBytes(wire));
  zmq::message_t counts = frame_pool_->Get(segs.total_keys * sizeof(uint32_t));
  auto* vbytes = static_cast<std::byte*>(values.data());
  auto* cbytes = static_cast<std::byte*>(counts.data());
  const bool train = h.mode() == wire::TRAIN;
  Status status;
  size_t k = 0, off = 0;
  for (size_t s = 0; s < segs.table.size() && status.ok(); ++s) {
    const int t = segs.table[s];
    const uint32_t shard = segs.shard[s];
    const uint32_t dim = tables_[t].dim;
    const size_t row_bytes = dim * WeightBytes(wire);
    ShardStore* store = shards_[t][shard].get();
    const std::span<const uint64_t> seg_keys = keys.subspan(k, segs.count[s]);
    std::byte* seg_values = vbytes + off;
    std::byte* seg_counts = cbytes + k * sizeof(uint32_t);
    store->FindEach(seg_keys, [&](size_t i, uint32_t row) {
      if (row == ShardStore::kNoRow && train) {
        row = Materialize(t, shard, store, seg_keys[i], &status);
        if (!status.ok()) return false;
      }
      uint32_t count = 0;
      std::byte* out = seg_values + i * row_bytes;
      if (wire != WeightFormat::kFp32) {
        if (row != ShardStore::kNoRow && store->format() == wire) {
          CopyRow(out, store->WeightData(row), row_bytes);
        } else {
          if (row == ShardStore::kNoRow)
            ReadDefault(t, shard, reinterpret_cast<std::byte*>(weight_scratch_.data()));
          else
            store->GetWeights(row, weight_scratch_.data());
          FloatsToHalves(weight_scratch_.data(), dim, wire, 1.0f, out);
        }
        if (row != ShardStore::kNoRow) count = store->Count(row);
      } else if (row == ShardStore::kNoRow) {
        ReadDefault(t, shard, seg_values + i * row_bytes);
      } else {
        if (store->format() == WeightFormat::kFp32) {
          CopyRow(seg_values + i * row_bytes, store->WeightData(row), row_bytes);
        } else {
          store->GetWeights(row, weight_scratch_.data());
          std::memcpy(seg_values + i * row_bytes, weight_scratch_.data(), row_bytes);
        }
        count = store->Count(row);
      }
      std::memcpy(seg_counts + i * sizeof(uint32_t), &count, sizeof(count));
      return true;
    });
    k += segs.count[s];
    off += segs.count[s] * row_bytes;
  }
  if (!status.ok()) return status;
  reply->push_back(std::move(values));
  reply->push_back(std::move(counts));
  return Status::Ok();
}

Status LaneHandler::Push(const Segments& segs, std::span<const uint64_t> keys,
                         std::span<const float> grads) {
  // Asynchronous pushes: the clock counts this lane's pushes (bit 63 clear).
  const uint64_t clock = ++push_clock_ & ~(uint64_t{1} << 63);
  now_ = push_clock_;
  size_t k = 0, off = 0;
  Status status;
  for (size_t s = 0; s < segs.table.size(); ++s) {
    const int t = segs.table[s];
    const uint32_t shard = segs.shard[s];
    const TableSpec& spec = tables_[t];
    ShardStore* store = shards_[t][shard].get();
    const std::span<const uint64_t> seg_keys = keys.subspan(k, segs.count[s]);
    const float* seg_grads = grads.data() + off;
    bool to_default = false;
    if (spec.shared_default) std::fill_n(default_grad_.begin(), spec.dim, 0.0f);
    store->FindEach(seg_keys, [&](size_t i, uint32_t row) {
      if (row == ShardStore::kNoRow) {
        row = Materialize(t, shard, store, seg_keys[i], &status);
        if (!status.ok()) return false;
        if (row == ShardStore::kNoRow) {
          // No row (full under SKIP_NEW, or not admitted): the shared default row takes
          // the gradient, or it is dropped.
          if (spec.shared_default) {
            for (uint32_t j = 0; j < spec.dim; ++j) default_grad_[j] += seg_grads[i * spec.dim + j];
            to_default = true;
          }
          return true;
        }
      }
      ApplyGradient(spec, store, row, seg_grads + i * spec.dim, clock);
      Touch(t, shard, row);
      MarkChanged(t, shard, row);
      return true;
    });
    if (!status.ok()) return status;
    if (to_default) ApplyDefault(t, shard, default_grad_.data());
    k += segs.count[s];
    off += segs.count[s] * spec.dim;
  }
  return Status::Ok();
}

Status LaneHandler::PushCounts(const Segments& segs, std::span<const uint64_t> keys,
                               std::span<const uint32_t> counts) {
  size_t k = 0;
  Status status;
  for (size_t s = 0; s < segs.table.size(); ++s) {
    const int t = segs.table[s];
    ShardStore* store = shards_[t][segs.shard[s]].get();
    AdmissionSketch* sketch = sketches_[t][segs.shard[s]].get();
    for (uint64_t i = 0; i < segs.count[s]; ++i, ++k) {
      uint32_t count = counts[k];
      if (sketch != nullptr && store->Find(keys[k]) == ShardStore::kNoRow) {
        // Online admission: a sighting of an ID without a row. The row, once admitted,
        // starts with the estimate (all its sightings so far, this request's included).
        const uint32_t est = sketch->Add(keys[k], count);
        if (!Admits(tables_[t], keys[k], est - std::min(est, count), est)) {
          ++rejected_keys_[t][segs.shard[s]];
          continue;
        }
        const uint32_t row = Materialize(t, segs.shard[s], store, keys[k], &status, true);
        if (!status.ok()) return status;
        if (row == ShardStore::kNoRow) continue;  // full (SKIP_NEW)
        ++admitted_ids_[t][segs.shard[s]];
        store->AddCount(row, est);
        MarkChanged(t, segs.shard[s], row);
        continue;
      }
      const uint32_t row = Materialize(t, segs.shard[s], store, keys[k], &status);
      if (!status.ok()) return status;
      if (row != ShardStore::kNoRow) {
        store->AddCount(row, count);
        MarkChanged(t, segs.shard[s], row);
      }
    }
  }
  return Status::Ok();
}

void LaneHandler::GatherCounts(const Segments& segs, std::span<const uint64_t> keys,
                               std::span<const uint32_t> counts) {
  size_t k = 0;
  for (size_t s = 0; s < segs.table.size(); ++s) {
    auto& gathered = prepass_counts_[segs.table[s]][segs.shard[s]];
    for (uint64_t i = 0; i < segs.count[s]; ++i, ++k) gathered[keys[k]] += counts[k];
  }
}

Status LaneHandler::Admit() {
  // Per shard: the gathered IDs, most frequent first; ties by ID, so the order (and the
  // rows a cap keeps) does not depend on the order in which the counts arrived.
  std::vector<std::vector<std::vector<std::pair<uint64_t, uint64_t>>>> order(tables_.size());
  // With admission.probability the draws of the sightings min_count..n_j (as online).
  auto admitted = [&](const TableSpec& spec, uint64_t key, uint64_t n) {
    return n >= spec.min_count && (spec.probability >= 1.0 || Admits(spec, key, 0, n));
  };
  int64_t fail_bytes = 0;  // new rows of when_full: FAIL tables
  int fail_table = 0;
  uint64_t fail_rows = 0;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const TableSpec& spec = tables_[t];
    order[t].resize(spec.shards);
    for (uint32_t s = 0; s < spec.shards; ++s) {
      if (shards_[t][s] == nullptr) continue;  // not served by this lane
      auto& ids = order[t][s];
      ids.assign(prepass_counts_[t][s].begin(), prepass_counts_[t][s].end());
      std::sort(ids.begin(), ids.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      if (admission_closed_[t]) continue;
      const ShardStore* store = shards_[t][s].get();
      uint64_t adding = 0;
      for (const auto& [key, n] : ids)
        if (admitted(spec, key, n) && store->Find(key) == ShardStore::kNoRow) ++adding;
      if (spec.when_full == config::TableConfig::FAIL) {
        // FAIL: refused whole, before any row is created.
        if (spec.max_rows != 0 && store->size() + adding > spec.max_rows)
          return CapError(static_cast<int>(t), s, adding);
        fail_bytes += static_cast<int64_t>(adding * RowCost(static_cast<int>(t)));
        if (adding > fail_rows) {
          fail_rows = adding;
          fail_table = static_cast<int>(t);
        }
      }
    }
  }
  // The server's memory budget: FAIL tables' new rows must all fit, or ADMIT is refused
  // before any row is created; SKIP_NEW tables take rows, most frequent first per shard,
  // while the budget lasts (the rest count as skipped keys).
  const bool budgeted = budget_ != nullptr && budget_->limit > 0;
  const int64_t limit = budgeted ? static_cast<int64_t>(budget_->limit) : 0;
  int64_t used = budgeted ? budget_->used.load(std::memory_order_relaxed) : 0;
  if (budgeted && fail_bytes > 0 && used + fail_bytes > limit)
    return BudgetError(fail_table, used,
                       "ADMIT would add about " + std::to_string(fail_bytes) +
                           " bytes of new rows (when_full: FAIL)");
  used += fail_bytes;
  Status status;
  for (size_t t = 0; t < tables_.size(); ++t) {
    const TableSpec& spec = tables_[t];
    for (uint32_t s = 0; s < spec.shards; ++s) {
      ShardStore* store = shards_[t][s].get();
      if (store == nullptr) continue;
      for (const auto& [key, n] : order[t][s]) {
        if (!admitted(spec, key, n)) {
          ++rejected_ids_[t][s];
          continue;
        }
        if (budgeted && spec.skips_when_full() && store->Find(key) == ShardStore::kNoRow) {
          const int64_t cost = static_cast<int64_t>(RowCost(static_cast<int>(t)));
          if (used + cost > limit) {
            ++skipped_[t][s];
            continue;
          }
          used += cost;
        }
        const uint32_t row = Materialize(static_cast<int>(t), s, store, key, &status);
        if (!status.ok()) return status;
        if (row == ShardStore::kNoRow) continue;  // full (SKIP_NEW) or closed
        store->AddCount(row, static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX)));
        ++admitted_ids_[t][s];
      }
      prepass_counts_[t][s] = {};  // frees the map
    }
    if (spec.gated() && !spec.online_admission) admission_closed_[t] = true;
  }
  return Status::Ok();
}

void LaneHandler::Touch(int table, uint32_t shard, uint32_t row, bool created) {
  if (tables_[table].evicts()) TouchEvict(table, shard, row, created);
  if (tables_[table].ttl_steps == 0) return;
  std::vector<uint64_t>& last = last_push_[table][shard];
  if (last.size() <= row) last.resize(std::max<size_t>(row + 1, last.size() * 2), kUnknownStep);
  last[row] = now_;
}

void LaneHandler::Sweep(uint64_t budget) {
  // Each table is passed over at most once per call (a lane may serve no shard of it).
  for (size_t visited = 0; budget > 0 && visited <= tables_.size();) {
    if (sweep_table_ >= tables_.size()) sweep_table_ = 0;
    const TableSpec& spec = tables_[sweep_table_];
    if (spec.ttl_steps == 0 || sweep_shard_ >= spec.shards) {
      sweep_table_ = (sweep_table_ + 1) % tables_.size();
      sweep_shard_ = 0;
      sweep_row_ = 0;
      ++visited;
      continue;
    }
    ShardStore* store = shards_[sweep_table_][sweep_shard_].get();
    if (store == nullptr || sweep_row_ >= store->end_row()) {
      ++sweep_shard_;
      sweep_row_ = 0;
      continue;
    }
    std::vector<uint64_t>& last = last_push_[sweep_table_][sweep_shard_];
    if (last.size() < store->end_row()) last.resize(store->end_row(), kUnknownStep);
    const uint64_t end = std::min(store->end_row(), sweep_row_ + budget);
    budget -= end - sweep_row_;
    for (; sweep_row_ < end; ++sweep_row_) {
      const auto row = static_cast<uint32_t>(sweep_row_);
      if (last[row] == kUnknownStep) {
        // A row without a record (a checkpoint's): its age counts from the first step
        // after the load, not from step 0.
        if (now_ > 0) last[row] = now_;
        continue;
      }
      if (store->live(row) && now_ > last[row] && now_ - last[row] > spec.ttl_steps) {
        store->Erase(row);
        ++evicted_[sweep_table_][sweep_shard_];
      }
    }
  }
}

void LaneHandler::ReadDefault(int table, uint32_t shard, std::byte* out) const {
  const TableSpec& spec = tables_[table];
  const size_t bytes = size_t{spec.dim} * sizeof(float);
  if (spec.shared_default)
    std::memcpy(out, default_rows_[table][shard].data(), bytes);
  else
    std::memset(out, 0, bytes);
}

void LaneHandler::ApplyDefault(int table, uint32_t shard, const float* g) {
  const TableSpec& spec = tables_[table];
  float* row = default_rows_[table][shard].data();
  spec.optimizer->Apply(row, row + spec.dim, g, spec.dim);
}

Status LaneHandler::CheckSync(const wire::SyncStep& sync) const {
  constexpr uint32_t kMaxWorkers = 1u << 16;
  if (sync.workers() == 0 || sync.workers() > kMaxWorkers)
    return Status::InvalidArgument("synchronous push: workers must be in 1.." +
                                   std::to_string(kMaxWorkers) + ", got " +
                                   std::to_string(sync.workers()));
  if (sync.worker() >= sync.workers())
    return Status::InvalidArgument("synchronous push: worker " + std::to_string(sync.worker()) +
                                   " of " + std::to_string(sync.workers()));
  if (sync.samples() > (uint64_t{1} << 40))
    return Status::InvalidArgument("synchronous push: implausible sample count " +
                                   std::to_string(sync.samples()));
  if (sync_.arrived > 0) {
    if (sync.step() != sync_.step || sync.workers() != sync_.workers)
      return Status::InvalidArgument(
          "synchronous push for step " + std::to_string(sync.step()) + " of " +
          std::to_string(sync.workers()) + " workers while step " + std::to_string(sync_.step) +
          " of " + std::to_string(sync_.workers) + " workers is being gathered on server " +
          std::to_string(server_) + " lane " + std::to_string(lane_));
    if (!sync_.frames[sync.worker()].empty())
      return Status::InvalidArgument("synchronous push: worker " + std::to_string(sync.worker()) +
                                     " already pushed step " + std::to_string(sync.step()));
  } else if (sync_.any_completed && sync.step() <= sync_.last_completed) {
    return Status::InvalidArgument("synchronous push for step " + std::to_string(sync.step()) +
                                   ", which server " + std::to_string(server_) + " lane " +
                                   std::to_string(lane_) + " has already applied (last " +
                                   std::to_string(sync_.last_completed) + ")");
  }
  return Status::Ok();
}

Status LaneHandler::ApplySyncStep() {
  uint64_t samples = 0;
  for (const auto& h : sync_.headers) samples += h.sync().samples();
  for (auto& t : sync_sums_) {
    t.slot.clear();
    t.keys.clear();
    t.shards.clear();
    t.sums.clear();
  }
  // Sum per distinct key, the pushes in worker order: the result does not depend on the
  // order in which the pushes arrived.
  for (uint32_t w = 0; w < sync_.workers; ++w) {
    const wire::RequestHeader& h = sync_.headers[w];
    std::vector<zmq::message_t>& frames = sync_.frames[w];
    const std::span<const uint64_t> keys = FrameAs<uint64_t>(frames[1], &key_scratch_);
    const std::span<const float> grads = GradientFloats(h, frames[2], &float_scratch_);
    size_t k = 0, off = 0;
    for (const auto& seg : h.segments()) {
      const uint32_t dim = tables_[seg.table()].dim;
      SyncSums& acc = sync_sums_[seg.table()];
      for (uint64_t i = 0; i < seg.count(); ++i, ++k, off += dim) {
        auto [it, fresh] = acc.slot.try_emplace(keys[k], static_cast<uint32_t>(acc.keys.size()));
        if (fresh) {
          acc.keys.push_back(keys[k]);
          acc.shards.push_back(seg.shard());
          acc.sums.insert(acc.sums.end(), grads.begin() + off, grads.begin() + off + dim);
        } else {
          float* sum = acc.sums.data() + static_cast<size_t>(it->second) * dim;
          for (uint32_t j = 0; j < dim; ++j) sum[j] += grads[off + j];
        }
      }
    }
  }
  if (samples == 0) return Status::Ok();
  // A step that would take a `when_full: FAIL` shard past its cap is refused whole,
  // before any row is created or moved (each push passed CheckCaps alone; together they
  // may add more new rows).
  runs_.clear();
  for (size_t t = 0; t < sync_sums_.size(); ++t) {
    if (!FailCapped(static_cast<uint32_t>(t))) continue;
    const SyncSums& acc = sync_sums_[t];
    for (size_t i = 0; i < acc.keys.size(); ++i)
      runs_.push_back({static_cast<uint32_t>(t), acc.shards[i], {&acc.keys[i], 1}, {}});
  }
  if (!runs_.empty()) {
    // Pushes create no rows in a table with online admission (CollectNewKeys).
    CollectNewKeys(runs_, [](uint32_t) { return true; });
    DIN_RETURN_IF_ERROR(ForEachNewKeyGroup([&](int t, uint32_t shard, uint64_t n) {
      if (shards_[t][shard]->size() + n > tables_[t].max_rows) return CapError(t, shard, n);
      return Status::Ok();
    }));
  }
  const float inv = 1.0f / static_cast<float>(samples);
  // A synchronous step's clock is the trainer's step count (bit 63 set): the same for
  // every lane and placement, and continued by a resumed run.
  const wire::SyncStep& first = sync_.headers[0].sync();
  const uint64_t clock = (first.has_clock() ? first.clock() : first.step()) | (uint64_t{1} << 63);
  // The TTL clock (docs/design.md §5): the trainer's step count, which a resumed run
  // continues (the rounds in `step` restart at 0).
  now_ = std::max(now_, first.has_clock() ? first.clock() : first.step());
  std::vector<float> g;
  Status status;
  for (size_t t = 0; t < sync_sums_.size(); ++t) {
    SyncSums& acc = sync_sums_[t];
    const TableSpec& spec = tables_[t];
    g.resize(spec.dim);
    // Per shard: the step's gradient for the shared default row (the sum over the IDs
    // without a row of their sums / samples), applied once after the table's rows.
    std::map<uint32_t, std::vector<float>> default_g;
    for (size_t i = 0; i < acc.keys.size(); ++i) {
      ShardStore* store = shards_[t][acc.shards[i]].get();
      uint32_t row = store->Find(acc.keys[i]);
      if (row == ShardStore::kNoRow) {
        row = Materialize(static_cast<int>(t), acc.shards[i], store, acc.keys[i], &status);
        if (!status.ok()) return status;
        if (row == ShardStore::kNoRow) {  // no row: to the shared default row, or dropped
          if (spec.shared_default) {
            std::vector<float>& dg = default_g[acc.shards[i]];
            dg.resize(spec.dim, 0.0f);
            const float* sum = acc.sums.data() + i * spec.dim;
            for (uint32_t j = 0; j < spec.dim; ++j) dg[j] += sum[j] * inv;
          }
          continue;
        }
      }
      const float* sum = acc.sums.data() + i * spec.dim;
      store->GetWeights(row, weight_scratch_.data());
      const float* w = weight_scratch_.data();
      // The MBA term once per distinct ID of the global batch (a count of 0, an ID the
      // counts never reached, is taken as 1).
      const float scale =
          spec.mba_lambda / static_cast<float>(std::max<uint32_t>(store->Count(row), 1));
      for (uint32_t j = 0; j < spec.dim; ++j)
        g[j] = sum[j] * inv + (spec.mba_lambda != 0 ? scale * w[j] : 0.0f);
      ApplyGradient(spec, store, row, g.data(), clock);
      Touch(static_cast<int>(t), acc.shards[i], row);
      MarkChanged(static_cast<int>(t), acc.shards[i], row);
    }
    for (const auto& [shard, dg] : default_g) ApplyDefault(static_cast<int>(t), shard, dg.data());
  }
  return Status::Ok();
}

bool LaneHandler::HasIdleWork() const {
  for (const auto& table : shards_)
    for (const auto& store : table)
      if (store != nullptr && store->migrating()) return true;
  return false;
}

bool LaneHandler::IdleWork() {
  for (auto& table : shards_) {
    for (auto& store : table) {
      if (store == nullptr || !store->migrating()) continue;
      store->DrainStep(kIdleDrainSlots);
      return HasIdleWork();
    }
  }
  return false;
}

std::vector<zmq::message_t> LaneHandler::Handle(std::vector<zmq::message_t>& frames) {
  return Process(frames).reply;
}

LaneHandler::Outcome LaneHandler::Process(std::vector<zmq::message_t>& frames) {
  Outcome out;
  wire::RequestHeader h;
  wire::ReplyHeader rh;
  rh.set_version(wire::CURRENT_VERSION);
  rh.set_server_rank(static_cast<uint32_t>(server_));
  std::vector<zmq::message_t>& reply = out.reply;
  reply.resize(1);
  Segments segs;
  Status status;
  if (frames.empty() || !DecodeFrame(frames[0], &h)) {
    status = Status::InvalidArgument("cannot parse request header");
  } else {
    rh.set_request_id(h.request_id());
    status = Validate(h, frames, &segs);
  }
  if (!status.ok()) {
    SetReplyStatus(status, &rh);
    reply[0] = EncodeFrame(rh);
    return out;
  }

  std::span<const uint64_t> keys;
  if (frames.size() > 1) keys = FrameAs<uint64_t>(frames[1], &key_scratch_);
  const bool creates_rows = h.op() == wire::PUSH || (h.op() == wire::PUSH_COUNTS && !h.prepass()) ||
                            (h.op() == wire::PULL && h.mode() == wire::TRAIN);
  if (creates_rows) {
    std::span<const uint32_t> counts;
    if (h.op() == wire::PUSH_COUNTS) counts = FrameAs<uint32_t>(frames[2], &count_scratch_);
    status = CheckCaps(segs, keys, counts);
    if (status.ok()) status = CheckBudget(segs, keys, counts);
    if (!status.ok()) {
      SetReplyStatus(status, &rh);
      reply[0] = EncodeFrame(rh);
      return out;
    }
  }
  if (h.has_sync()) {
    // Held until the step's last push arrives (CheckSync admitted it).
    const uint32_t w = h.sync().worker();
    if (sync_.arrived == 0) {
      sync_.step = h.sync().step();
      sync_.workers = h.sync().workers();
      sync_.frames.clear();
      sync_.frames.resize(sync_.workers);
      sync_.headers.clear();
      sync_.headers.resize(sync_.workers);
    }
    sync_.frames[w] = std::move(frames);
    sync_.headers[w] = std::move(h);
    ++sync_.arrived;
    out.reply.clear();
    out.held_slot = static_cast<int>(w);
    if (sync_.arrived < sync_.workers) return out;
    status = ApplySyncStep();
    PublishMemory();
    budget_skip_ = false;
    for (uint32_t i = 0; i < sync_.workers; ++i) {
      wire::ReplyHeader r;
      r.set_version(wire::CURRENT_VERSION);
      r.set_server_rank(static_cast<uint32_t>(server_));
      r.set_request_id(sync_.headers[i].request_id());
      if (!status.ok()) SetReplyStatus(status, &r);
      std::vector<zmq::message_t> released;
      released.push_back(EncodeFrame(r));
      out.released.emplace_back(static_cast<int>(i), std::move(released));
    }
    sync_.any_completed = true;
    sync_.last_completed = sync_.step;
    sync_.arrived = 0;
    sync_.frames.clear();
    sync_.headers.clear();
    if (any_ttl_) Sweep(kSweepRowsPerRequest);
    if (any_evict_) EvictWhenFull();
    return out;
  }
  switch (h.op()) {
    case wire::PULL:
      status = Pull(h, segs, keys, &reply);
      break;
    case wire::PUSH:
      status = Push(segs, keys, GradientFloats(h, frames[2], &float_scratch_));
      break;
    case wire::PUSH_COUNTS:
      if (h.prepass())
        GatherCounts(segs, keys, FrameAs<uint32_t>(frames[2], &count_scratch_));
      else
        status = PushCounts(segs, keys, FrameAs<uint32_t>(frames[2], &count_scratch_));
      break;
    case wire::ADMIT:
      status = Admit();
      break;
    case wire::STATS: {
      timespec cpu{};
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
      const double cpu_seconds = static_cast<double>(cpu.tv_sec) + 1e-9 * cpu.tv_nsec;
      for (size_t t = 0; t < shards_.size(); ++t) {
        for (size_t s = 0; s < shards_[t].size(); ++s) {
          const ShardStore* store = shards_[t][s].get();
          if (store == nullptr) continue;
          wire::ShardStats* st = rh.add_stats();
          st->set_table(static_cast<uint32_t>(t));
          st->set_shard(static_cast<uint32_t>(s));
          st->set_rows(store->size());
          const AdmissionSketch* sketch = sketches_[t][s].get();
          st->set_bytes(store->MemoryBytes() + (sketch ? sketch->MemoryBytes() : 0));
          st->set_row_bytes(store->row_bytes());
          st->set_max_rows(tables_[t].max_rows);
          st->set_skipped_keys(skipped_[t][s]);
          st->set_admitted_ids(admitted_ids_[t][s]);
          st->set_rejected_ids(rejected_ids_[t][s]);
          st->set_rejected_keys(rejected_keys_[t][s]);
          st->set_evicted_rows(evicted_[t][s]);
          st->set_server_cpu_seconds(cpu_seconds);
        }
      }
      break;
    }
    case wire::DUMP:
      Dump(h.dump(), &rh);
      break;
    case wire::LOAD:
      Load(h.load(), &rh);
      break;
    default:
      break;
  }
  if (creates_rows || h.op() == wire::LOAD || h.op() == wire::ADMIT) PublishMemory();
  budget_skip_ = false;
  if (!status.ok()) SetReplyStatus(status, &rh);
  if (status.ok() && h.op() == wire::PULL && h.precision() != wire::FP32)
    rh.set_precision(h.precision());
  reply[0] = EncodeFrame(rh);
  // Between requests: a bounded slice of the ttl_steps sweep.
  if (any_ttl_) Sweep(kSweepRowsPerRequest);
  if (any_evict_) EvictWhenFull();
  return out;
}

}  // namespace din
