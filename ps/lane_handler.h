// The request path of one lane of a parameter server (ps/server.h): the shards the
// lane owns and the handling of one request over them, from decoding and validating its
// frames to the reply frames. PULL, PUSH, PUSH_COUNTS, STATS and PING are in
// lane_handler.cc; DUMP and LOAD (dump parts and checkpoints, ps/dump_writer.h) in
// lane_handler_dump_load.cc.
//
// No sockets and no threads here: PsServer's lane thread owns its handler and feeds it one
// request at a time; tests and fuzzers call Handle() directly.
#pragma once

#include <compare>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>

#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "common/placement.h"
#include "common/proto/config.pb.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "ps/shard_store.h"

namespace din {

// What every lane needs to know about a table (read-only after construction).
struct TableSpec {
  TableSpec(const config::TableConfig& cfg);
  std::string name;
  uint32_t dim;
  uint32_t shards;
  uint64_t expected_rows;
  uint64_t max_rows;  // max_rows_per_shard; 0 = no cap
  float mba_lambda;   // synchronous steps add mba_lambda * w_j / n_j on the lane
  config::TableConfig::WhenFull when_full;
  std::unique_ptr<SparseOptimizer> optimizer;
  RowInitializer initializer;
};

// The shards of one lane and the request logic over them. Handle() is the unit the
// malformed-message tests drive directly, without sockets.
class LaneHandler {
 public:
  LaneHandler(const std::vector<TableSpec>& tables, const Placement& placement, int server,
              int lane, uint64_t max_request_keys);
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

  // How many pushes of the synchronous step being gathered arrived (0: none).
  uint32_t sync_arrived() const { return sync_.arrived; }

  // The store of (table, shard), or nullptr when this lane does not serve it.
  ShardStore* store(int table, uint32_t shard) { return shards_[table][shard].get(); }

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
  // Rejects a request that would create rows past the cap of a `when_full: FAIL` shard,
  // before any of it is applied.
  Status CheckCaps(const Segments& segs, std::span<const uint64_t> keys);
  // The row of `key`, created and initialised when absent; kNoRow when the shard is full
  // (under SKIP_NEW the key is counted as skipped, otherwise *status tells why).
  uint32_t Materialize(int table, uint32_t shard, ShardStore* store, uint64_t key, Status* status);
  // The FAIL policy's error for a request that would add `adding` rows to the shard.
  Status CapError(int table, uint32_t shard, uint64_t adding) const;
  // Writes every shard of this lane as dump parts (ps/dump_writer.h) and lists them in
  // rh->dump_parts; a failure becomes an INTERNAL reply naming the file
  // (lane_handler_dump_load.cc, as is Load).
  void Dump(const wire::DumpRequest& req, wire::ReplyHeader* rh);
  // Inserts the rows of a checkpoint (written with any number of servers and shards)
  // that belong to this lane's shards under the current config; every file is verified
  // against the MANIFEST first, so a refused checkpoint loads nothing. A failure becomes
  // an INVALID_REQUEST (bad checkpoint) or INTERNAL reply naming the file.
  void Load(const wire::LoadRequest& req, wire::ReplyHeader* rh);

  const std::vector<TableSpec>& tables_;
  const Placement& placement_;
  const int server_;
  const int lane_;
  const uint64_t max_request_keys_;
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
  std::vector<uint64_t> key_scratch_;
  std::vector<float> float_scratch_;
  std::vector<uint32_t> count_scratch_;
};

}  // namespace din
