// din_worker: one worker process, started by mpirun next to the din_ps servers.
//
// --mode=train (default) runs the training loop (worker/trainer.h) over this worker's
// part of data.train_path, evaluates on data.test_path and prints one JSON line of
// figures from worker 0 at the end. `--set PATH=VALUE` (repeatable) overrides config
// fields (common/config_override.h); give the servers the same overrides.
//
// --mode=selfcheck exercises the parameter servers end to end: every worker pulls a
// block of IDs of its own (creating the rows), pushes known gradients, pulls again and
// checks that each row moved exactly as the table's optimizer prescribes; it also checks
// that evaluation pulls of unknown IDs read zeros and create nothing. Prints one JSON
// line of figures from worker 0 and exits non-zero on any mismatch.
#include <unistd.h>

#include <pthread.h>

#include <csignal>
#include <thread>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/allocator.h"
#include "common/cluster.h"
#include "common/config.h"
#include "common/config_override.h"
#include "ps/optimizer.h"
#include "ps/row_initializer.h"
#include "worker/collective.h"
#include "worker/ps_client.h"
#include "worker/report.h"
#include "worker/trainer.h"

DEFINE_string(config, "", "training configuration (text-format TrainConfig, *.pbtxt)");
DEFINE_string(mode, "train",
              "train: the training loop; selfcheck: verify pull/push against the servers");
DEFINE_string(progress, "auto",
              "worker 0's progress: bar (redrawn line), log (a line every "
              "trainer.log_every_seconds) or auto (bar when stderr is a terminal)");
DEFINE_int32(ids, 100000, "selfcheck: IDs per worker and table");
DEFINE_int32(rounds, 3, "selfcheck: push/pull rounds");

namespace din {
namespace {

// Training stopped early on request (SIGUSR1: launch/din-train forwards SIGTERM/SIGINT
// this way, through mpirun, which passes SIGUSR1 on to every process).
bool g_stopped = false;
constexpr int kExitStopped = 75;

// SIGUSR1 is blocked in every thread (so no system call of the training thread or of
// ZeroMQ's threads is interrupted) and taken by this thread with sigwait.
void StartStopSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) == 0 && sig == SIGUSR1) RequestStop();
    }
  }).detach();
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

Status SelfCheck(const config::TrainConfig& cfg, Cluster& cluster) {
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  const int w = cluster.role_rank();
  const int n = FLAGS_ids;
  double pull_ms = 0, push_ms = 0;
  uint64_t keys_moved = 0;
  for (int t = 0; t < cfg.tables_size(); ++t) {
    const auto& table = cfg.tables(t);
    const uint32_t dim = table.dim();
    // IDs of this worker only (a sparse, large ID space), each listed twice so the
    // client's deduplication is exercised.
    std::vector<uint64_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back((uint64_t{1} << 40) * (w + 1) + 7919ull * i);
    for (int i = 0; i < n; ++i) ids.push_back(ids[i]);

    TablePull before;
    PullSpec pull{t, ids, &before};
    auto t0 = std::chrono::steady_clock::now();
    DIN_ASSIGN_OR_RETURN(auto h, client->Pull({&pull, 1}, wire::TRAIN));
    DIN_RETURN_IF_ERROR(client->Wait(h));
    pull_ms += Ms(std::chrono::steady_clock::now() - t0);
    if (before.unique_ids.size() != static_cast<size_t>(n))
      return Status::Internal("dedup returned " + std::to_string(before.unique_ids.size()) +
                              " ids");
    RowInitializer init(table.initializer(), table.seed());
    std::vector<float> expect(dim);
    for (int i = 0; i < n; ++i) {
      init.Fill(before.unique_ids[i], expect.data(), dim);
      for (uint32_t j = 0; j < dim; ++j)
        if (before.values[static_cast<size_t>(i) * dim + j] != expect[j])
          return Status::Internal("table " + table.name() + ": row " +
                                  std::to_string(before.unique_ids[i]) +
                                  " does not hold its initial value");
    }

    auto opt = SparseOptimizer::Create(table.optimizer());
    std::vector<float> model = before.values;
    std::vector<float> state(static_cast<size_t>(n) * opt->StateFloats(dim));
    for (int i = 0; i < n; ++i)
      opt->InitState(state.data() + static_cast<size_t>(i) * opt->StateFloats(dim), dim);
    std::vector<float> grads(static_cast<size_t>(n) * dim);
    for (int r = 0; r < FLAGS_rounds; ++r) {
      for (size_t k = 0; k < grads.size(); ++k)
        grads[k] = 0.001f * static_cast<float>((k * 31 + r * 7) % 97) - 0.05f;
      PushSpec push{t, before.unique_ids, grads};
      t0 = std::chrono::steady_clock::now();
      DIN_ASSIGN_OR_RETURN(auto ph, client->Push({&push, 1}));
      DIN_RETURN_IF_ERROR(client->Wait(ph));
      push_ms += Ms(std::chrono::steady_clock::now() - t0);
      for (int i = 0; i < n; ++i)
        opt->Apply(model.data() + static_cast<size_t>(i) * dim,
                   state.data() + static_cast<size_t>(i) * opt->StateFloats(dim),
                   grads.data() + static_cast<size_t>(i) * dim, dim);
      keys_moved += 2ull * n;
    }
    TablePull after;
    PullSpec again{t, before.unique_ids, &after};
    DIN_ASSIGN_OR_RETURN(auto h2, client->Pull({&again, 1}, wire::TRAIN));
    DIN_RETURN_IF_ERROR(client->Wait(h2));
    if (after.values != model)
      return Status::Internal("table " + table.name() + ": rows after " +
                              std::to_string(FLAGS_rounds) + " pushes differ from the " +
                              opt->Name() + " reference");

    // Evaluation pulls of unknown IDs read zeros and create nothing.
    std::vector<uint64_t> unknown{(uint64_t{1} << 62) + w, (uint64_t{1} << 62) + 1000 + w};
    TablePull eval;
    PullSpec ep{t, unknown, &eval};
    DIN_ASSIGN_OR_RETURN(auto h3, client->Pull({&ep, 1}, wire::EVAL));
    DIN_RETURN_IF_ERROR(client->Wait(h3));
    for (float v : eval.values)
      if (v != 0.0f) return Status::Internal("evaluation pull of an unknown ID is not zero");
  }
  DIN_ASSIGN_OR_RETURN(auto stats, client->Stats());
  uint64_t rows = 0, bytes = 0;
  for (const auto& s : stats) {
    rows += s.rows();
    bytes += s.bytes();
  }
  if (w == 0) {
    std::printf(
        "{\"mode\":\"selfcheck\",\"workers\":%d,\"servers\":%d,\"tables\":%d,\"rows\":%llu,"
        "\"bytes\":%llu,\"pull_ms\":%.2f,\"push_ms\":%.2f,\"keys_moved\":%llu,\"ok\":true}\n",
        cluster.num_workers(), cluster.num_servers(), cfg.tables_size(),
        static_cast<unsigned long long>(rows), static_cast<unsigned long long>(bytes), pull_ms,
        push_ms, static_cast<unsigned long long>(keys_moved));
    std::fflush(stdout);
  }
  return Status::Ok();
}

// din_gen writes bayes.json (the test set's Bayes-optimal metrics) next to test.tsv.
std::string ReadBayesJson(const std::string& test_path) {
  if (test_path.empty()) return "";
  std::filesystem::path p(test_path);
  std::error_code ec;
  const auto dir = std::filesystem::is_directory(p, ec) ? p : p.parent_path();
  std::ifstream in(dir / "bayes.json");
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status Train(const config::TrainConfig& cfg, Cluster& cluster) {
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  MpiCollective collective(cluster.role_comm());
  Trainer::Options options;
  options.progress_bar =
      FLAGS_progress == "bar" || (FLAGS_progress == "auto" && isatty(STDERR_FILENO));
  options.num_servers = cluster.num_servers();
  DIN_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(cfg, client.get(), &collective, options));
  if (cluster.role_rank() == 0)
    LOG(INFO) << "training on " << cluster.num_workers() << " worker(s), " << cluster.num_servers()
              << " server(s), backend " << trainer->backend().name() << ", "
              << trainer->backend().params().size() << " dense parameters";
  DIN_RETURN_IF_ERROR(trainer->Train());
  if (trainer->summary().stopped) {
    g_stopped = true;
    if (cluster.role_rank() == 0) {
      const auto& s = trainer->summary();
      if (s.stopped_checkpoint.empty())
        LOG(WARNING) << "training stopped on request at step " << s.steps
                     << " without a checkpoint (trainer.checkpoint.dir is not set)";
      else
        LOG(WARNING) << "training stopped on request at step " << s.steps << "; checkpoint "
                     << s.stopped_checkpoint << " holds the state; continue with --resume "
                     << s.stopped_checkpoint;
    }
    return Status::Ok();
  }
  if (cluster.role_rank() == 0) {
    DIN_ASSIGN_OR_RETURN(auto stats, client->Stats());
    ServerFigures servers;
    for (const auto& s : stats) {
      servers.rows += s.rows();
      servers.skipped_keys += s.skipped_keys();
    }
    const std::string line =
        SummaryJson(trainer->summary(), servers, cfg, cluster.num_workers(), cluster.num_servers(),
                    ReadBayesJson(cfg.data().test_path()));
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) {
  din::ConfigureAllocator();
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  din::StartStopSignalThread();  // before any other thread exists
  din::Cluster cluster(&argc, &argv);
  auto overrides = din::ExtractRepeatedFlag("set", &argc, argv);
  if (!overrides.ok()) cluster.Fail(overrides.status());
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_config.empty()) cluster.Fail(din::Status::InvalidArgument("--config is required"));
  auto cfg = din::LoadConfigWithOverrides(FLAGS_config, *overrides);
  if (!cfg.ok()) cluster.Fail(cfg.status());
  din::Status st = cluster.Rendezvous(din::Role::kWorker, "", din::TablesFingerprint(*cfg));
  if (!st.ok()) cluster.Fail(st);
  if (FLAGS_mode == "selfcheck") {
    st = din::SelfCheck(*cfg, cluster);
  } else if (FLAGS_mode == "train") {
    st = din::Train(*cfg, cluster);
  } else {
    st = din::Status::InvalidArgument("unknown --mode " + FLAGS_mode);
  }
  if (!st.ok()) cluster.Fail(st);
  st = cluster.Barrier();
  if (!st.ok()) cluster.Fail(st);
  return din::g_stopped ? din::kExitStopped : 0;
}
