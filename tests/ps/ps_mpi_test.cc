// Worker side of the 2 servers x 2 workers test, run as real processes:
//   mpirun -np 2 din_ps --config ps_mpi_test.pbtxt : -np 2 ps_mpi_test --config ...
// Any failed check ends the whole job with a non-zero exit (Cluster::Fail).
#include <cstring>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/config.h"
#include "common/net/job_process.h"
#include "worker/ps_client.h"

namespace din {
namespace {

constexpr int kRounds = 5;

Status Check(bool ok, const std::string& what) {
  return ok ? Status::Ok() : Status::Internal("check failed: " + what);
}

Result<TablePull> Pull(PsClient& c, int table, const std::vector<uint64_t>& ids,
                       wire::PullMode mode = wire::TRAIN) {
  TablePull out;
  PullSpec spec{table, ids, &out};
  DIN_ASSIGN_OR_RETURN(auto h, c.Pull({&spec, 1}, mode));
  DIN_RETURN_IF_ERROR(c.Wait(h));
  return out;
}

Result<uint64_t> Rows(PsClient& c) {
  DIN_ASSIGN_OR_RETURN(auto stats, c.Stats());
  uint64_t rows = 0;
  for (const auto& s : stats) rows += s.rows();
  return rows;
}

float Grad(int worker, uint64_t id, int j) {
  return static_cast<float>((worker + 1) * static_cast<int>((id + j) % 4)) / 8.0f;
}

Status Run(const config::TrainConfig& cfg, Cluster& cluster) {
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  const int w = cluster.role_rank();
  std::vector<uint64_t> shared;
  for (uint64_t i = 0; i < 2000; ++i) shared.push_back(i * 0x9E3779B97F4A7C15ULL);

  // 1. Both workers create the same rows; all hold the constant initial value.
  DIN_ASSIGN_OR_RETURN(TablePull first, Pull(*client, 0, shared));
  for (float v : first.values) DIN_RETURN_IF_ERROR(Check(v == 0.25f, "initial value 0.25"));
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());

  // 2. Both push to the same IDs concurrently; every push lands. Gradients are multiples
  //    of 1/8 and lr = 0.5, so sums are exact in any order.
  std::vector<float> grads(shared.size() * 8);
  for (size_t i = 0; i < shared.size(); ++i)
    for (int j = 0; j < 8; ++j) grads[i * 8 + j] = Grad(w, shared[i], j);
  for (int r = 0; r < kRounds; ++r) {
    PushSpec push{0, shared, grads};
    DIN_ASSIGN_OR_RETURN(auto h, client->Push({&push, 1}));
    DIN_RETURN_IF_ERROR(client->Wait(h));
  }
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  DIN_ASSIGN_OR_RETURN(TablePull after, Pull(*client, 0, shared));
  for (size_t i = 0; i < shared.size(); ++i) {
    for (int j = 0; j < 8; ++j) {
      const float expect = 0.25f - 0.5f * kRounds * (Grad(0, shared[i], j) + Grad(1, shared[i], j));
      if (after.values[i * 8 + j] != expect)
        return Status::Internal("row " + std::to_string(shared[i]) + "[" + std::to_string(j) +
                                "] = " + std::to_string(after.values[i * 8 + j]) + ", expected " +
                                std::to_string(expect));
    }
  }

  // 3. Rows pulled but never pushed stay bit-identical while both workers push other rows
  //    of the same table (and shards).
  std::vector<uint64_t> watched, pushed;
  for (uint64_t i = 0; i < 3000; ++i) {
    watched.push_back((static_cast<uint64_t>(w) + 1) << 48 | i);
    pushed.push_back((static_cast<uint64_t>(w) + 3) << 48 | i);
  }
  DIN_ASSIGN_OR_RETURN(TablePull watched_before, Pull(*client, 1, watched));
  DIN_ASSIGN_OR_RETURN(TablePull pushed_before, Pull(*client, 1, pushed));
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  {
    std::vector<float> g(pushed_before.values.size(), 0.01f);
    PushSpec push{1, pushed_before.unique_ids, g};
    DIN_ASSIGN_OR_RETURN(auto h, client->Push({&push, 1}));
    DIN_RETURN_IF_ERROR(client->Wait(h));
  }
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  DIN_ASSIGN_OR_RETURN(TablePull watched_after, Pull(*client, 1, watched));
  DIN_RETURN_IF_ERROR(Check(std::memcmp(watched_before.values.data(), watched_after.values.data(),
                                        watched_before.values.size() * sizeof(float)) == 0,
                            "rows never pushed are bit-identical"));
  DIN_ASSIGN_OR_RETURN(TablePull pushed_after, Pull(*client, 1, pushed));
  for (size_t k = 0; k < pushed_after.values.size(); ++k)
    DIN_RETURN_IF_ERROR(
        Check(pushed_after.values[k] < pushed_before.values[k], "pushed rows moved"));

  // 4. Evaluation pulls never create rows.
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  DIN_ASSIGN_OR_RETURN(uint64_t rows_before, Rows(*client));
  std::vector<uint64_t> unknown;
  for (uint64_t i = 0; i < 500; ++i) unknown.push_back((static_cast<uint64_t>(7 + w) << 56) + i);
  DIN_ASSIGN_OR_RETURN(TablePull eval, Pull(*client, 1, unknown, wire::EVAL));
  for (float v : eval.values) DIN_RETURN_IF_ERROR(Check(v == 0.0f, "unknown rows read as zero"));
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  DIN_ASSIGN_OR_RETURN(uint64_t rows_after, Rows(*client));
  DIN_RETURN_IF_ERROR(Check(rows_before == rows_after, "evaluation pulls created rows"));
  DIN_RETURN_IF_ERROR(
      Check(rows_after == 2000 + 2 * 2 * 3000, "row count = shared + private rows"));

  // 5. Counts from both workers add up.
  std::vector<uint32_t> ones(shared.size(), 1);
  for (int r = 0; r < 2; ++r) {
    CountSpec spec{0, shared, ones};
    DIN_ASSIGN_OR_RETURN(auto h, client->PushCounts({&spec, 1}));
    DIN_RETURN_IF_ERROR(client->Wait(h));
  }
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  DIN_ASSIGN_OR_RETURN(TablePull counted, Pull(*client, 0, shared));
  for (uint32_t c : counted.counts)
    DIN_RETURN_IF_ERROR(Check(c == 4, "n_j = 2 workers x 2 pushes"));
  LOG(INFO) << "worker " << w << ": all distributed checks passed";
  return Status::Ok();
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) {
  din::InitProcess(argv[0], "distributed parameter-server test (started by mpirun)");
  din::JobProcess job = din::StartJob(&argc, &argv);
  din::Cluster& cluster = *job.cluster;
  din::Status st = cluster.Rendezvous(din::Role::kWorker, "", din::TablesFingerprint(job.config));
  if (st.ok()) st = din::Run(job.config, cluster);
  if (!st.ok()) cluster.Fail(st);
  st = cluster.Barrier();
  if (!st.ok()) cluster.Fail(st);
  return 0;
}
