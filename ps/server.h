// The parameter server of one din_ps process.
//
// A server owns the shards that Placement gives it and serves them from L lanes: each
// lane is one thread with its own ZeroMQ ROUTER socket bound on an ephemeral port and
// owns its shards outright (shared-nothing), so shards of different lanes are served in
// parallel and no lock is taken on the request path. A lane handles its requests one
// after another, which is also why a pull never observes a half-applied push of a row.
// This file holds the sockets and threads: the lanes' ROUTER sockets (with CURVE and the
// ZAP handler thread when configured), their endpoints for the rendezvous, and one thread
// per lane feeding requests to its LaneHandler (ps/lane_handler.h: the request path).
//
// Thread safety: Create/Start/Stop from one thread. Handler objects belong to their
// lane's thread once Start() has run.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "common/placement.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "ps/lane_handler.h"
#include "ps/zap_handler.h"

namespace din {

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
  // Creates the shards `placement` assigns to server `rank` and starts the lanes. The
  // lanes together keep their tables within `memory_limit_bytes` (0: no budget;
  // LaneHandler::CheckBudget).
  void Start(const Placement& placement, int rank, uint64_t memory_limit_bytes = 0);
  // The table memory budget the lanes share (limit and bytes in use).
  const MemoryBudget& budget() const { return budget_; }
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
  MemoryBudget budget_;
  std::vector<std::unique_ptr<LaneHandler>> handlers_;
  std::vector<std::thread> threads_;
  std::atomic<bool> running_{false};
};

// Number of lanes a server opens for ps.threads (0 = one per core, at most 8).
int DefaultLanes(const config::PsConfig& ps);

// MemAvailable of text in /proc/meminfo's format, in bytes (0 when absent).
uint64_t MemAvailableBytes(const std::string& meminfo);
// ps.memory_limit_bytes when set; else 90% of `available` bytes divided among the job's
// `local_processes` on this host (servers and workers), so that servers sharing a
// machine do not each count all of it.
uint64_t MemoryBudgetBytes(const config::PsConfig& ps, uint64_t available, int local_processes);

}  // namespace din
