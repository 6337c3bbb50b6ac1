// The request path of one lane of a parameter server (ps/server.h): the shards the
// lane owns and the handling of one request over them, from decoding and validating its
// frames to the reply frames. PULL, PUSH, PUSH_COUNTS, STATS and PING are in
// lane_handler.cc; DUMP and LOAD (dump parts and checkpoints, ps/dump_writer.h) in
// lane_handler_dump_load.cc.
//
// No sockets and no threads here: PsServer's lane thread owns its handler and feeds it one
// request at a time; tests and fuzzers call Handle() directly.
#pragma once

#include <atomic>
#include <compare>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "common/net/wire.h"
#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "common/placement.h"
#include "common/proto/config.pb.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "ps/admission_sketch.h"
#include "ps/shard_store.h"

namespace din {

// What every lane needs to know about a table (read-only after construction).
struct TableSpec {
  // `online_counts`: the job's trainer.mba_mode is ONLINE (admission counts in a sketch).
  TableSpec(const config::TableConfig& cfg, bool online_counts = false);
  std::string name;
  uint32_t dim;
  uint32_t shards;
  uint64_t expected_rows;
  uint64_t max_rows;  // max_rows_per_shard; 0 = no cap
  float mba_lambda;   // synchronous steps add mba_lambda * w_j / n_j on the lane
  config::TableConfig::WhenFull when_full;
  WeightFormat storage;   // how the shards store the weights
  uint64_t rounding_key;  // the table's part of the stochastic-rounding draws
  uint32_t min_count;     // admission.min_count (<= 1: every ID is admitted)
  double probability;     // admission.probability (1: no draw)
  // Admission gates rows at all: min_count > 1 or probability < 1.
  bool gated() const { return min_count > 1 || probability < 1.0; }
  // Gated admission with ONLINE counts: rows come only from PUSH_COUNTS, once an ID's
  // sighting count in the shard's AdmissionSketch admits it.
  bool online_admission;
  uint64_t sketch_bytes;  // per shard: admission.sketch_bytes / shards
  uint32_t sketch_depth;
  uint64_t admission_key;  // the table's part of the admission draws
  bool shared_default;     // admission.default_row SHARED: IDs without a row share one
  uint64_t ttl_steps;      // evict rows not pushed for more steps (0 = never)
  // when_full EVICT_LFU or EVICT_LRU: the shard evicts rows to make room (eviction pass).
  bool evicts() const {
    return when_full == config::TableConfig::EVICT_LFU ||
           when_full == config::TableConfig::EVICT_LRU;
  }
  // New IDs that find no room get no row (SKIP_NEW, and EVICT_* until the next pass).
  bool skips_when_full() const { return when_full == config::TableConfig::SKIP_NEW || evicts(); }
  std::unique_ptr<SparseOptimizer> optimizer;
  RowInitializer initializer;
};

// A server's table memory budget (ps.memory_limit_bytes), shared by its lanes: `used` is
// the sum of the lanes' ShardStore::MemoryBytes() (index slots and rows), which each lane
// brings up to date after every request that may create rows.
struct MemoryBudget {
  uint64_t limit = 0;  // 0: no budget
  std::atomic<int64_t> used{0};
};

// The shards of one lane and the request logic over them. Handle() is the unit the
// malformed-message tests drive directly, without sockets.
class LaneHandler {
 public:
  // `budget` (may be null: no budget) outlives the handler.
  LaneHandler(const std::vector<TableSpec>& tables, const Placement& placement, int server,
              int lane, uint64_t max_request_keys, MemoryBudget* budget = nullptr);
  LaneHandler(const LaneHandler&) = delete;
  LaneHandler& operator=(const LaneHandler&) = delete;

  // Processes one request (the frames after the ROUTER identity) and returns the reply
  // frames. A failure is answered with the code and message of its Status (common/net/wire.h).
  // Never throws on bad input: a malformed request gets an INVALID_REQUEST reply and
  // changes nothing. So does a training request that would take a shard of a
  // `when_full: FAIL` table past max_rows_per_shard (RESOURCE_EXHAUSTED, naming table,
  // shard, cap and server). Under SKIP_NEW such IDs get no row instead: a pull reads
  // zeros with count 0 for them, a push or push_counts to them is dropped, and each such
  // key is counted in the shard's STATS (skipped_keys).
  //
  // A synchronous push (RequestHeader.sync, docs/design.md §10) is validated when it
  // arrives (a bad one is answered at once and changes nothing), then held: its reply is
  // empty. The push that completes the step (the last of `workers`) applies the step and
  // releases the replies of all its pushes. Handle() returns only the reply to this
  // request; a server uses Process(), which also says what was held and released.
  std::vector<zmq::message_t> Handle(std::vector<zmq::message_t>& request);

  struct Outcome {
    // The reply to this request; empty when it is a synchronous push being held.
    std::vector<zmq::message_t> reply;
    // For a held push: its slot (the worker index) until the step completes; else -1.
    int held_slot = -1;
    // When this request completed a synchronous step: the reply to each held push of
    // the step (this one included), by slot.
    std::vector<std::pair<int, std::vector<zmq::message_t>>> released;
  };
  Outcome Process(std::vector<zmq::message_t>& request);

  // Idle-time work between requests: draining the old index of a shard whose index
  // grew (ShardStore::DrainStep). IdleWork() does one bounded step (kIdleDrainSlots
  // slots, well under a millisecond) and returns whether work remains; a server lane
  // calls it while no request is waiting.
  static constexpr uint64_t kIdleDrainSlots = 1 << 16;
  bool HasIdleWork() const;
  bool IdleWork();

  // How many pushes of the synchronous step being gathered arrived (0: none).
  uint32_t sync_arrived() const { return sync_.arrived; }

  // The store of (table, shard), or nullptr when this lane does not serve it.
  ShardStore* store(int table, uint32_t shard) { return shards_[table][shard].get(); }
  // True once ADMIT (or a LOAD) closed a table with admission.min_count > 1: an ID
  // without a row never gets one from then on.
  bool admission_closed(int table) const { return admission_closed_[table]; }
  // The admission sketch of (table, shard); nullptr unless the table's admission is
  // online (TableSpec::online_admission) and this lane serves the shard.
  const AdmissionSketch* sketch(int table, uint32_t shard) const {
    return sketches_[table][shard].get();
  }
  // The shared default row of (table, shard): dim weights then the optimizer state;
  // empty unless admission.default_row is SHARED.
  const std::vector<float>& default_row(int table, uint32_t shard) const {
    return default_rows_[table][shard];
  }

 private:
  struct Segments;
  Status Validate(const wire::RequestHeader& h, std::vector<zmq::message_t>& frames,
                  Segments* segs);
  // Appends the values and counts frames to *reply; on failure (a full shard) appends
  // nothing.
  Status Pull(const wire::RequestHeader& h, const Segments& segs, std::span<const uint64_t> keys,
              std::vector<zmq::message_t>* reply);
  Status Push(const Segments& segs, std::span<const uint64_t> keys, std::span<const float> grads);
  // Checks a synchronous push against the step being gathered (number, worker count, a
  // second push of the same worker) before it is held.
  Status CheckSync(const wire::SyncStep& sync) const;
  // Applies the gathered step: sums the held pushes in worker order per distinct key,
  // divides by the step's samples, adds the MBA term and runs the optimizer once per row.
  Status ApplySyncStep();
  Status PushCounts(const Segments& segs, std::span<const uint64_t> keys,
                    std::span<const uint32_t> counts);
  // Keys of one table and shard of a request (with their counts for PUSH_COUNTS, else
  // empty): the input of CollectNewKeys.
  struct KeyRun {
    uint32_t table;
    uint32_t shard;
    std::span<const uint64_t> keys;
    std::span<const uint32_t> counts;
  };
  // Appends the request's runs (one per segment) to *runs.
  static void RunsOf(const Segments& segs, std::span<const uint64_t> keys,
                     std::span<const uint32_t> counts, std::vector<KeyRun>* runs);
  // Builds new_keys_: the sorted distinct (table, shard, key) that have no row and that
  // the runs (in order) would give one, over the runs whose table `want` accepts. A table
  // with online admission creates rows only from counts: its keys without counts are
  // left out, and a key with counts is in only when the sketch, updated as PushCounts
  // will update it (simulated, the sketch is not changed), admits it.
  template <typename Want>
  void CollectNewKeys(std::span<const KeyRun> runs, Want&& want);
  // Calls fn(table, shard, n) for each (table, shard) group of new_keys_; stops at the
  // first fn that returns a failed Status and returns it.
  template <typename Fn>
  Status ForEachNewKeyGroup(Fn&& fn) const;
  // A `when_full: FAIL` table with a cap whose admission is open (one whose new rows
  // CheckCaps and the synchronous step count).
  bool FailCapped(uint32_t table) const;
  // Rejects a request that would create rows past the cap of a `when_full: FAIL` shard,
  // before any of it is applied.
  Status CheckCaps(const Segments& segs, std::span<const uint64_t> keys,
                   std::span<const uint32_t> counts);
  // The row of `key`, created and initialised when absent; kNoRow when the shard is full
  // (under SKIP_NEW the key is counted as skipped, otherwise *status tells why) or when
  // the table's admission is closed and `key` has no row (counted as rejected), or when
  // the table's admission is online and `admitted` is false (its rows come only from
  // PushCounts, which passes true once the sketch admits the key).
  uint32_t Materialize(int table, uint32_t shard, ShardStore* store, uint64_t key, Status* status,
                       bool admitted = false);
  // Whether the sightings number from+1..to of `key` admit it (number >= min_count, and
  // a draw below the table's probability for one of them; at most kMaxDraws draws, past
  // which the key is admitted).
  static constexpr uint64_t kMaxDraws = 1 << 16;
  static bool Admits(const TableSpec& spec, uint64_t key, uint64_t from, uint64_t to);
  // Runs the table's optimizer on row `row` with gradient `g`: in place for float32
  // weights; otherwise on their float32 values, stored back with stochastic rounding
  // drawn from (table, key, clock) (docs/design.md §5).
  void ApplyGradient(const TableSpec& spec, ShardStore* store, uint32_t row, const float* g,
                     uint64_t clock);
  // The server's memory budget: a request whose new rows (and the index growth they
  // cause) would take the server's table memory past it is refused with an error naming
  // the table and the server when a `when_full: FAIL` table gets new rows; new rows of
  // SKIP_NEW tables get none for this request (budget_skip_). Cheap unless the request
  // could reach the budget (its key count times the largest row cost).
  Status CheckBudget(const Segments& segs, std::span<const uint64_t> keys,
                     std::span<const uint32_t> counts);
  // The budget's growth term: an index that grows keeps the old one while it drains
  // (1.5x the slots, plus the old).
  static int64_t IndexGrowth(const ShardStore& store, uint64_t adding);
  // The refusal of new rows of a `when_full: FAIL` table past the server's memory
  // budget (CheckBudget and ADMIT): the tables hold `used` bytes and `adding` says what
  // the request would add.
  Status BudgetError(int table, int64_t used, const std::string& adding) const;

  // Memory one more row of table t takes: its arena bytes plus index slots at the load
  // factor.
  uint64_t RowCost(int table) const;
  // Brings budget_->used up to date with this lane's shards.
  void PublishMemory();
  // The FAIL policy's error for a request that would add `adding` rows to the shard.
  Status CapError(int table, uint32_t shard, uint64_t adding) const;
  // PUSH_COUNTS with `prepass`: adds the counts to the shards' gathered PREPASS counts.
  void GatherCounts(const Segments& segs, std::span<const uint64_t> keys,
                    std::span<const uint32_t> counts);
  // ADMIT: creates, per shard, the rows of the gathered IDs with n_j >= min_count in
  // descending n_j order (ties: ascending ID), up to the cap, and closes admission for
  // tables with min_count > 1. A `when_full: FAIL` shard that cannot take all admitted IDs
  // fails the request before any row is created.
  Status Admit();
  // Reads the weights an ID without a row pulls: the shared default row, or zeros.
  void ReadDefault(int table, uint32_t shard, std::byte* out) const;
  // Applies `g` (the sum of the gradients of IDs without a row) to the shared default
  // row of (table, shard).
  void ApplyDefault(int table, uint32_t shard, const float* g);
  // Rows the ttl_steps sweep looks at after each request.
  static constexpr uint64_t kSweepRowsPerRequest = 4096;
  // last_push_ of a row with no record yet (loaded from a checkpoint).
  static constexpr uint64_t kUnknownStep = UINT64_MAX;
  // Records that row `row` of (table, shard) was created or pushed at the current step
  // (tables with ttl_steps or an EVICT_* policy).
  void Touch(int table, uint32_t shard, uint32_t row, bool created = false);
  // Eviction under a cap (lane_handler_evict.cc, docs/design.md §5): the row's eviction
  // word (EVICT_LFU: pushes since creation; EVICT_LRU: low 32 bits of the step of the last
  // push or creation) is brought up to date.
  void TouchEvict(int table, uint32_t shard, uint32_t row, bool created);
  // A row's worth under its table's policy: lower is evicted first. EVICT_LFU: n_j plus
  // pushes since creation; EVICT_LRU: 2^32 - 1 minus the steps since its last push.
  uint64_t EvictScore(int table, uint32_t shard, uint32_t row) const;
  // Between requests: a shard of an EVICT_* table with fewer than max_rows /
  // kEvictBatchDivisor free rows starts an eviction pass, which evicts its lowest-scoring
  // rows until twice that many are free. A pass visits a bounded number of rows per call
  // (kEvictVisitsPerRequest, or kEvictVisitsPerRow per row created since the last call
  // when more) and continues after the next request, so no request waits for a lap over
  // a large shard.
  static constexpr uint64_t kEvictBatchDivisor = 32;
  static constexpr size_t kEvictSample = 512;
  static constexpr uint64_t kEvictVisitsPerRequest = 1 << 16;
  static constexpr uint64_t kEvictVisitsPerRow = 64;
  struct EvictPass {
    bool active = false;
    uint64_t target = 0;           // the pass ends once the shard holds at most this many rows
    double quantile = 0;           // (rows to free) / (rows held) when the pass started
    std::vector<uint64_t> sample;  // sampled scores, sorted
    uint64_t threshold = 0;        // rows scoring at most this are evicted
    int lap = 0;                   // laps over the rows that fell short
    uint64_t visited = 0;          // rows visited in this lap
    uint64_t seen_rows = 0;        // the shard's rows after the last call
  };
  void EvictWhenFull();
  // Starts a pass: a threshold is taken from the scores of kEvictSample random live rows
  // (all rows when fewer) at the quantile 1.25 * (rows to free) / (rows held).
  void StartEvictPass(int table, uint32_t shard);
  // The threshold of the pass's lap: lap k takes the quantile times 2^k; the fourth lap
  // evicts any row.
  static void SetEvictThreshold(EvictPass* pass);
  // Continues the pass of (table, shard) for up to `budget` row visits: from the shard's
  // cursor, rows scoring at most the threshold are erased until the target is reached; a
  // lap over every row that falls short moves to the next lap's threshold.
  void EvictDown(int table, uint32_t shard, uint64_t budget);
  // The ttl_steps sweep: looks at up to `budget` rows (continuing where the last sweep
  // stopped, over every shard of the lane) and erases those not pushed for more than
  // ttl_steps steps. Runs after each request, so no request waits for a whole pass.
  void Sweep(uint64_t budget);
  // Writes every shard of this lane as dump parts (ps/dump_writer.h) and lists them in
  // rh->dump_parts; a failure becomes an INTERNAL reply naming the file
  // (lane_handler_dump_load.cc, as is Load).
  void Dump(const wire::DumpRequest& req, wire::ReplyHeader* rh);
  // Inserts the rows of a checkpoint (written with any number of servers and shards)
  // that belong to this lane's shards under the current config. With the checkpoint's
  // shard count only the parts of this lane's shards are read; with another, every part
  // of the table once, its rows filtered by ShardOf. The parts are streamed (bounded
  // memory) and verified against the MANIFEST's sizes (before any row is inserted) and
  // XXH64 (while streaming; the resuming worker verified every file beforehand, so a
  // refused checkpoint normally loads nothing). A failure becomes an INVALID_REQUEST
  // (bad checkpoint) or INTERNAL reply naming the file.
  void Load(const wire::LoadRequest& req, wire::ReplyHeader* rh);

  const std::vector<TableSpec>& tables_;
  const Placement& placement_;
  const int server_;
  const int lane_;
  const uint64_t max_request_keys_;
  MemoryBudget* const budget_;
  int64_t published_bytes_ = 0;  // this lane's part of budget_->used
  bool budget_skip_ = false;     // this request: SKIP_NEW tables create no row (budget)
  std::vector<std::vector<std::unique_ptr<ShardStore>>> shards_;  // [table][shard]
  // Incremental dumps, per [table][shard]: the rows pushed or counted since the last
  // DUMP with `mark` (by row index), and the row count then (rows past it are new).
  std::vector<std::vector<std::vector<uint8_t>>> changed_;
  std::vector<std::vector<uint64_t>> marked_rows_;
  void MarkChanged(int table, uint32_t shard, uint32_t row) {
    std::vector<uint8_t>& c = changed_[table][shard];
    if (row >= marked_rows_[table][shard]) return;  // new since the mark: written anyway
    if (row >= c.size()) c.resize(marked_rows_[table][shard], 0);
    c[row] = 1;
  }
  // SKIP_NEW: keys refused a row, per [table][shard]; and whether the table's first full
  // shard of this lane was logged.
  std::vector<std::vector<uint64_t>> skipped_;
  std::vector<bool> full_logged_;
  // Admission (docs/design.md §5), per [table][shard] unless noted: the PREPASS counts
  // gathered until ADMIT; IDs ADMIT gave a row and refused; training keys refused a row
  // after admission closed; whether admission is closed, per table; and the shared
  // default rows (weights then optimizer state, float32) with a gradient scratch.
  std::vector<std::vector<std::unordered_map<uint64_t, uint64_t>>> prepass_counts_;
  std::vector<std::vector<uint64_t>> admitted_ids_;
  std::vector<std::vector<uint64_t>> rejected_ids_;
  std::vector<std::vector<uint64_t>> rejected_keys_;
  std::vector<bool> admission_closed_;
  // Online admission: per [table][shard] the sightings of IDs without a row (null for
  // tables without online admission and shards of other lanes).
  std::vector<std::vector<std::unique_ptr<AdmissionSketch>>> sketches_;
  std::unordered_map<uint64_t, uint32_t> sketch_overlay_;  // CollectNewKeys scratch
  std::vector<KeyRun> runs_;                               // CheckCaps/CheckBudget scratch
  std::vector<std::vector<std::vector<float>>> default_rows_;
  std::vector<float> default_grad_;
  // Eviction (ttl_steps): per [table][shard] the step of each row's last push or
  // creation (by row number; empty for tables without ttl_steps) and the rows evicted;
  // the lane's current step (the last synchronous step number or asynchronous push
  // clock); and the sweep's position.
  std::vector<std::vector<std::vector<uint64_t>>> last_push_;
  std::vector<std::vector<uint64_t>> evicted_;
  uint64_t now_ = 0;
  size_t sweep_table_ = 0;
  uint32_t sweep_shard_ = 0;
  uint64_t sweep_row_ = 0;
  bool any_ttl_ = false;
  // Eviction under a cap (EVICT_LFU / EVICT_LRU), per [table][shard]: each row's eviction
  // word by row number (4 bytes per row; empty for other tables) and the eviction lap's
  // cursor and its pass; the sampling draws.
  std::vector<std::vector<std::vector<uint32_t>>> evict_word_;
  std::vector<std::vector<uint64_t>> evict_cursor_;
  std::vector<std::vector<EvictPass>> evict_pass_;
  uint64_t evict_draws_ = 0;
  bool any_evict_ = false;
  // CheckCaps scratch: keys per [table][shard] of one request (all 0 between requests),
  // and the absent keys of shards near their cap.
  std::vector<std::vector<uint64_t>> pending_keys_;
  struct NewKey {
    uint32_t table;
    uint32_t shard;
    uint64_t key;
    auto operator<=>(const NewKey&) const = default;
  };
  std::vector<NewKey> new_keys_;
  // The synchronous step being gathered (docs/design.md §10).
  struct SyncState {
    uint64_t step = 0;
    uint32_t workers = 0;
    uint32_t arrived = 0;  // 0: no step in progress
    bool any_completed = false;
    uint64_t last_completed = 0;
    std::vector<std::vector<zmq::message_t>> frames;  // [worker] the held request
    std::vector<wire::RequestHeader> headers;         // [worker]
  } sync_;
  // ApplySyncStep scratch, per table: key -> slot, the slots' keys, shards and sums.
  struct SyncSums {
    std::unordered_map<uint64_t, uint32_t> slot;
    std::vector<uint64_t> keys;
    std::vector<uint32_t> shards;
    std::vector<float> sums;
  };
  std::vector<SyncSums> sync_sums_;
  // Reply frames (pulled rows and counts) come from here and return once sent.
  std::shared_ptr<FramePool> frame_pool_;
  std::vector<uint64_t> key_scratch_;
  std::vector<float> float_scratch_;
  std::vector<float> weight_scratch_;  // one row's weights as float32
  uint64_t push_clock_ = 0;            // asynchronous pushes applied by this lane
  std::vector<uint32_t> count_scratch_;
};

}  // namespace din
