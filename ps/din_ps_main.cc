// din_ps: one parameter-server process. Started by mpirun together with the workers:
//   mpirun -np S din_ps --config job.pbtxt : -np W din_worker --config job.pbtxt ...
// Binds its lanes on ephemeral ports of ps.interface, publishes them through the MPI
// rendezvous, serves until every worker has reached the final barrier, then exits 0.
#include <csignal>
#include <fstream>
#include <iterator>
#include <string>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/config.h"
#include "common/net/job_process.h"
#include "common/placement.h"
#include "ps/server.h"

DEFINE_int32(lanes, 0, "serving threads (lanes) of this server; 0 = ps.threads from the config");

int main(int argc, char** argv) {
  din::InitProcess(argv[0], "parameter server of the DIN trainer (started by mpirun)");
  // SIGUSR1 asks the workers to checkpoint and stop (mpirun passes it to every process);
  // a server just keeps serving until the workers are done.
  std::signal(SIGUSR1, SIG_IGN);
  din::JobProcess job = din::StartJob(&argc, &argv);
  din::Cluster& cluster = *job.cluster;
  const din::config::TrainConfig& cfg = job.config;

  const int lanes = FLAGS_lanes > 0 ? FLAGS_lanes : din::DefaultLanes(cfg.ps());
  auto server = din::PsServer::Create(cfg, lanes);
  if (!server.ok()) cluster.Fail(server.status());

  din::Status st = cluster.Rendezvous(
      din::Role::kServer, din::JoinEndpoints((*server)->endpoints()), din::TablesFingerprint(cfg));
  if (!st.ok()) cluster.Fail(st);

  din::Placement placement(cfg, din::LaneCounts(cluster.servers()));
  if (cluster.role_rank() == 0) LOG(INFO) << placement.Describe(cfg);
  // The job's processes on this host share its available memory.
  int local = 0;
  for (const auto* peers : {&cluster.servers(), &cluster.workers()})
    for (const auto& p : *peers) local += p.host == cluster.host();
  std::ifstream meminfo("/proc/meminfo");
  const std::string text((std::istreambuf_iterator<char>(meminfo)),
                         std::istreambuf_iterator<char>());
  const uint64_t available = din::MemAvailableBytes(text);
  const uint64_t budget = din::MemoryBudgetBytes(cfg.ps(), available, local);
  (*server)->Start(placement, cluster.role_rank(), budget);
  LOG(INFO) << "server " << cluster.role_rank() << ": table memory budget " << budget << " bytes"
            << (cfg.ps().memory_limit_bytes() > 0
                    ? " (ps.memory_limit_bytes)"
                    : " (90% of the host's available " + std::to_string(available) +
                          " bytes over the job's " + std::to_string(local) + " processes on it)");
  LOG(INFO) << "server " << cluster.role_rank() << " on " << cluster.host() << " serving " << lanes
            << " lane(s) at " << din::JoinEndpoints((*server)->endpoints());

  st = cluster.Barrier();  // the workers reach it when they are done
  (*server)->Stop();
  if (!st.ok()) cluster.Fail(st);
  return 0;
}
