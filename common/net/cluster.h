// The MPI side of a job: roles, rendezvous, barriers, and failing the whole job.
//
// `mpirun -np S din_ps ... : -np W din_worker ...` starts S servers and W workers in
// one MPI_COMM_WORLD. Each process creates one Cluster, servers first bind their
// ZeroMQ sockets, then everyone calls Rendezvous(): an all-gather of (role, host,
// endpoint, config fingerprint) that gives every process the server endpoints.
//
// Thread safety: a Cluster is used from the thread that created it (MPI is initialised
// with MPI_THREAD_FUNNELED).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace din {

enum class Role { kServer = 0, kWorker = 1 };
const char* RoleName(Role role);

struct PeerInfo {
  Role role;
  int world_rank;
  int role_rank;  // index among the processes of the same role
  std::string host;
  std::string endpoint;  // servers only: tcp://ADDR:PORT
};

// A server publishes one endpoint per lane, joined by commas.
std::vector<std::string> SplitEndpoints(const std::string& joined);
std::string JoinEndpoints(const std::vector<std::string>& endpoints);
// Lanes per server, from the endpoints the servers published.
std::vector<int> LaneCounts(const std::vector<PeerInfo>& servers);

class Cluster {
 public:
  // Initialises MPI. One per process; MPI is finalised by the destructor.
  Cluster(int* argc, char*** argv);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Collective over all processes. `endpoint` is the server's bound address (empty for
  // workers). Fails when the processes disagree on the config fingerprint, or when the
  // job has no server or no worker.
  Status Rendezvous(Role role, const std::string& endpoint, uint64_t config_fingerprint);

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  Role role() const { return role_; }
  int role_rank() const { return role_rank_; }
  int num_servers() const { return static_cast<int>(servers_.size()); }
  int num_workers() const { return static_cast<int>(workers_.size()); }
  const std::vector<PeerInfo>& servers() const { return servers_; }
  const std::vector<PeerInfo>& workers() const { return workers_; }
  // Communicator of the processes with this process's role (workers' dense all-reduce).
  MPI_Comm role_comm() const { return role_comm_; }
  const std::string& host() const { return host_; }

  // A barrier over all processes that sleeps while it waits instead of spinning a core
  // (Open MPI's blocking calls busy-poll, which starves the servers on small machines).
  Status Barrier();
  // The same, over the processes of this process's role only (e.g. all workers).
  Status RoleBarrier();
  // Waits for a non-blocking MPI request the same way.
  static Status WaitPolling(MPI_Request* request);

  // Prints `status` as a fatal error naming this process and ends the whole job with
  // exit code 1 (MPI_Abort), so that no peer is left waiting.
  [[noreturn]] void Fail(const Status& status) const;

 private:
  int world_rank_ = 0;
  int world_size_ = 1;
  Role role_ = Role::kWorker;
  bool role_known_ = false;  // set by Rendezvous
  int role_rank_ = 0;
  std::string host_;
  std::vector<PeerInfo> servers_;
  std::vector<PeerInfo> workers_;
  MPI_Comm role_comm_ = MPI_COMM_NULL;
};

}  // namespace din
