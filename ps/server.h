// The parameter server of one din_ps process.
//
// A server owns the shards that Placement gives it and serves them from L lanes: each
// lane is one thread with its own ZeroMQ ROUTER socket bound on an ephemeral port and
// owns its shards outright (shared-nothing), so shards of different lanes are served in
// parallel and no lock is taken on the request path. A lane handles its requests one
// after another, which is also why a pull never observes a half-applied push of a row.
//
// Thread safety: Create/Start/Stop from one thread. Handler objects belong to their
// lane's thread once Start() has run.
#pragma once

#include <atomic>
#include <compare>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "common/placement.h"
#include "common/proto/config.pb.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "ps/shard_store.h"
#include "ps/zap_handler.h"

namespace din {

// What every lane needs to know about a table (read-only after construction).
struct TableSpec {
  TableSpec(const config::TableConfig& cfg);
  std::string name;
  uint32_t dim;
  uint32_t shards;
  uint64_t expected_rows;
  uint64_t max_rows;  // max_rows_per_shard; 0 = no cap
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
  // frames. Never throws on bad input: a malformed request gets an INVALID_REQUEST reply
  // and changes nothing. So does a training request that would take a shard of a
  // `when_full: FAIL` table past max_rows_per_shard (RESOURCE_EXHAUSTED, naming table,
  // shard, cap and server). Under SKIP_NEW such IDs get no row instead: a pull reads
  // zeros with count 0 for them, a push or push_counts to them is dropped, and each such
  // key is counted in the shard's STATS (skipped_keys).
  std::vector<zmq::message_t> Handle(std::vector<zmq::message_t>& request);

  // The store of (table, shard), or nullptr when this lane does not serve it.
  ShardStore* store(int table, uint32_t shard) { return shards_[table][shard].get(); }

 private:
  struct Segments;
  Status Validate(const wire::RequestHeader& h, std::vector<zmq::message_t>& frames,
                  Segments* segs);
  void Pull(const wire::RequestHeader& h, const Segments& segs, std::span<const uint64_t> keys,
            std::vector<zmq::message_t>* reply, wire::ReplyHeader* rh);
  Status Push(const Segments& segs, std::span<const uint64_t> keys, std::span<const float> grads);
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
  // rh->dump_parts; a failure becomes an INTERNAL reply naming the file.
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
  std::vector<uint64_t> key_scratch_;
  std::vector<float> float_scratch_;
  std::vector<uint32_t> count_scratch_;
};

class PsServer {
 public:
  // Binds `lanes` ROUTER sockets on ps.interface with kernel-chosen ports. With
  // security.curve they are CURVE servers behind a ZapHandler that admits only the job's
  // client key; a missing, malformed or too open key file fails here, naming the file.
  static Result<std::unique_ptr<PsServer>> Create(const config::TrainConfig& cfg, int lanes);
  ~PsServer();
  PsServer(const PsServer&) = delete;
  PsServer& operator=(const PsServer&) = delete;

  // One tcp:// endpoint per lane, in lane order.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // Creates the shards `placement` assigns to server `rank` and starts the lanes.
  void Start(const Placement& placement, int rank);
  // Stops the lanes (pending requests are dropped) and joins their threads.
  void Stop();
  // For tests and tools after Stop(): the handler of lane `lane`.
  LaneHandler* handler(int lane) { return handlers_[lane].get(); }
  // With security.curve, the ZAP handler (what it admitted and refused); else nullptr.
  const ZapHandler* zap() const { return zap_.get(); }

 private:
  explicit PsServer(const config::TrainConfig& cfg) : cfg_(cfg) {}
  void LaneLoop(int lane);

  const config::TrainConfig cfg_;
  int rank_ = -1;
  std::vector<TableSpec> tables_;
  std::unique_ptr<Placement> placement_;
  zmq::context_t ctx_;
  // With security.curve: admits the job's client key on every lane (destroyed before
  // ctx_, whose sockets it uses).
  std::unique_ptr<ZapHandler> zap_;
  std::vector<zmq::socket_t> sockets_;
  std::vector<std::string> endpoints_;
  std::vector<std::unique_ptr<LaneHandler>> handlers_;
  std::vector<std::thread> threads_;
  std::atomic<bool> running_{false};
};

// Number of lanes a server opens for ps.threads (0 = one per core, at most 8).
int DefaultLanes(const config::PsConfig& ps);

}  // namespace din
