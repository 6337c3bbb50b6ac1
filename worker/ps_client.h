// PsClient: a worker's connection to every lane of every parameter server.
//
// Pull(): per table, the IDs of a batch (with repeats) are deduplicated, routed by
// shard (docs/design.md §3: shard = Mix64(id) mod shards) to the lane serving it, and sent to
// all lanes involved at once; the call returns a Handle without waiting. Wait(handle)
// gathers the replies into the caller's TablePull: rows aligned with the unique IDs,
// plus the index mapping each occurrence to its unique row. Push() and PushCounts()
// are asynchronous the same way. Several requests may be in flight at once (pull batch
// t+1 while batch t computes); requests in flight at the same time may be applied by
// the servers in any order, so a caller that needs its push applied before its next
// pull (staleness 0) waits for the push first.
//
// Thread safety: not thread-safe; one thread owns a PsClient and makes every call.
// Ownership: Push/PushCounts copy their inputs before returning (the caller may reuse
// its buffers at once); a Pull's TablePull outputs are written during Wait() and must
// stay alive until then.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "common/net/cluster.h"
#include "common/net/wire.h"
#include "common/placement.h"
#include "common/proto/config.pb.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "worker/ps_reply.h"

namespace din {

struct PullSpec {
  int table;
  std::span<const uint64_t> ids;  // occurrences, repeats allowed
  TablePull* out;
};

// One gradient per ID; IDs should be unique (repeats are applied one after another).
struct PushSpec {
  int table;
  std::span<const uint64_t> ids;
  std::span<const float> grads;  // [ids.size() x dim]
};

struct CountSpec {
  int table;
  std::span<const uint64_t> ids;
  std::span<const uint32_t> counts;  // added to n_j, saturating
};

struct DumpOptions {
  // How long Dump() waits for every lane to finish writing: a large table takes longer
  // than ps.request_timeout_ms to write.
  std::chrono::milliseconds timeout{std::chrono::hours(1)};
  // A checkpoint: every table as NPY with counts and optimizer state (.state.npy), for
  // Load(); the config's dump_format and dump_counts are ignored.
  bool with_state = false;
  // Incremental dumps (wire::DumpRequest): write only the rows changed since the last
  // `mark`; start a new window of changes after writing. `base` and `parent` go into the
  // MANIFEST (DumpTables); a non-empty `base` makes the dump part of an incremental
  // series (wire::DumpRequest.incremental: row numbers, and a delta's removed IDs).
  bool delta = false;
  bool mark = false;
  std::string base, parent;
};

struct LoadOptions {
  // How long Load() waits for every lane to finish reading.
  std::chrono::milliseconds timeout{std::chrono::hours(1)};
  // LoadTables: the caller already checked the size and XXH64 of every table file (a
  // resume's FindCheckpoint does), so they are not read an extra time before the LOAD.
  bool files_verified = false;
};

class PsClient {
 public:
  using Handle = uint64_t;

  // Connects to every lane of `servers` (from Cluster::servers()). With security.curve
  // every connection is CURVE-encrypted and authenticated with the job's client key pair
  // (common/net/curve_keys.h); a missing, malformed or too open key file fails here.
  static Result<std::unique_ptr<PsClient>> Connect(const config::TrainConfig& cfg,
                                                   const std::vector<PeerInfo>& servers);
  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  // Each table may appear at most once per call. Returns without waiting for replies.
  Result<Handle> Pull(std::span<const PullSpec> tables, wire::PullMode mode);
  Result<Handle> Push(std::span<const PushSpec> tables);
  // One worker's part of a synchronous step (wire.proto SyncStep, docs/design.md §10):
  // `grads` are sums over the worker's samples, without the MBA term. Sent to every lane
  // (with no keys where it has none), so each lane knows when the step is complete. Its
  // Wait() returns once every worker's push for the step has reached every lane and the
  // step is applied: a pull sent after it sees the step.
  Result<Handle> PushStep(std::span<const PushSpec> tables, const wire::SyncStep& sync);
  // With `prepass`, the counts are PREPASS counts: the servers gather them without
  // creating rows until Admit() (wire.proto RequestHeader.prepass).
  Result<Handle> PushCounts(std::span<const CountSpec> tables, bool prepass = false);
  // Ends PREPASS on every lane: the gathered IDs get their rows, most frequent first,
  // as the tables' admission and caps allow (docs/design.md §5). Synchronous.
  Status Admit();
  // Blocks until every lane involved in `handle` replied, or the request timeout
  // (ps.request_timeout_ms) passed: then the error names the server rank, host, lane and
  // endpoint that did not answer. An error reply from a server is returned with its code
  // and message (common/net/wire.h), naming the server.
  Status Wait(Handle handle);
  // Rows and bytes per shard, from every lane (synchronous).
  Result<std::vector<wire::ShardStats>> Stats();
  // Asks every lane of every server to write the shards it serves as dump parts under
  // `dir` (ps/dump_writer.h; NPY or TEXT and counts per table from the config's
  // dump_format and dump_counts) and blocks until all lanes replied or options.timeout
  // passed. `dir` is sent as given: a relative path resolves against each server's
  // working directory. Returns one DumpPart per (table, shard), in no particular order.
  // Writes no MANIFEST: see DumpTables (worker/dump_manifest.h).
  Result<std::vector<wire::DumpPart>> Dump(const std::string& dir, const DumpOptions& options = {});
  // Asks every lane of every server to insert, from the complete checkpoint in `dir`
  // (written by Dump with with_state, by any number of servers and shards), the rows of
  // the shards it serves under this config, and blocks until all lanes replied or
  // options.timeout passed. Every lane verifies the whole checkpoint (_SUCCESS, sizes,
  // XXH64, dims, optimizer and its state size) before inserting anything. `dir` is sent
  // as given. Returns the number of rows inserted. See LoadTables
  // (worker/dump_manifest.h).
  Result<uint64_t> Load(const std::string& dir, const LoadOptions& options = {});

  const Placement& placement() const { return placement_; }
  void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }

 private:
  struct DestPlan {
    int dest;
    LaneRequest sent;  // segment entries index the request's table list
  };
  struct Pending {
    ReplyTarget target;  // op, and where the replies go
    std::vector<DestPlan> plans;
    std::vector<bool> done;  // per plan
    int remaining = 0;
    Status status;
    std::chrono::steady_clock::time_point deadline;
  };
  // What one entry of a request contributes: its table, unique IDs and, for pushes,
  // the per-key payload (floats per key = dim, or one uint32 count).
  struct Entry {
    int table;
    std::span<const uint64_t> ids;
    const std::byte* payload = nullptr;
    size_t payload_bytes_per_key = 0;
  };

  PsClient(const config::TrainConfig& cfg, Placement placement);
  // `sync` (PUSH only): a synchronous step's push, sent to every lane. `routed`: the
  // entries' keys were already routed into key_rank_ (Pull's DedupRoute does this).
  Result<Handle> Send(wire::Op op, wire::PullMode mode, std::span<const Entry> entries,
                      std::vector<TablePull*> outs, const wire::SyncStep* sync = nullptr,
                      bool prepass = false, bool routed = false);
  Result<std::vector<Entry>> PushEntries(std::span<const PushSpec> tables) const;
  Status Receive(int dest);
  // Sends `h` (op taken from `p.target`) to every lane and waits up to `timeout` for all replies.
  Status Broadcast(wire::RequestHeader h, Pending p, std::chrono::milliseconds timeout);
  void Complete(Pending& p, size_t plan, const Status& status);
  const std::string& DescribeDest(int dest) const { return dest_names_[dest]; }
  // Deduplicates `ids` into out->unique_ids and out->index and appends the routing rank
  // of each unique ID to key_rank_, hashing each occurrence once (Mix64 serves both the
  // dedup map and the shard).
  void DedupRoute(int table, std::span<const uint64_t> ids, TablePull* out);
  // Appends the routing rank of each of `ids` (of `table`) to key_rank_.
  void Route(int table, std::span<const uint64_t> ids);

  const config::TrainConfig cfg_;
  const Placement placement_;
  // ps.wire_precision: the element type of pulled values and pushed gradients.
  const WeightFormat wire_;
  std::chrono::milliseconds timeout_;
  zmq::context_t ctx_;
  std::vector<zmq::socket_t> sockets_;   // per dest
  std::vector<std::string> endpoints_;   // per dest
  std::vector<std::string> dest_names_;  // per dest: server, world rank, host, lane, endpoint
  // Global shards ranked in destination-major order: a request's keys, sorted by rank,
  // form one contiguous run per lane with its segments in shard order.
  std::vector<uint32_t> rank_of_shard_;  // global shard -> rank
  std::vector<uint32_t> shard_of_rank_;  // inverse
  std::vector<uint32_t> dest_of_rank_;
  std::vector<uint32_t> table_of_rank_;
  std::vector<uint32_t> shard_in_table_of_rank_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  // Request frames (keys, payload) come from here and return when sent.
  std::shared_ptr<FramePool> frame_pool_;
  // Scratch reused between requests. rank_counts_ and rank_cursor_ span all global
  // shards but only the ranks a request touches (touched_) are read or reset, so a
  // request costs nothing per shard it does not use.
  std::vector<uint32_t> dedup_slots_;
  std::vector<uint32_t> rank_counts_;  // all 0 between requests
  std::vector<uint32_t> rank_cursor_;
  std::vector<uint64_t> rank_payload_cursor_;
  std::vector<uint32_t> touched_;
  std::vector<uint32_t> key_rank_;
  std::vector<zmq::message_t> reply_msgs_;
  std::vector<std::string_view> reply_frames_;
};

}  // namespace din
