// din_worker: one worker process, started by mpirun next to the din_ps servers.
//
// --mode=train (default) runs the training loop (worker/trainer.h) over this worker's
// part of data.train_path, evaluates on data.test_path and prints one JSON line of
// figures from worker 0 at the end. `--set PATH=VALUE` (repeatable) overrides config
// fields (common/config_override.h); give the servers the same overrides.
//
// --mode=selfcheck exercises the parameter servers end to end (worker/selfcheck.h) and
// exits non-zero on any mismatch.
//
// --mode=predict loads the checkpoint trainer.resume_from designates and scores
// --predict_data into --predict_output, one probability per input line in input order
// (worker/predict.h); worker 0 prints one JSON line with the metrics.
//
// --mode=export writes that checkpoint's model (dense tensors as .npy, model.json, the
// embeddings as a dump) into --export_dir (worker/export.h).
#include <unistd.h>

#include <pthread.h>

#include <csignal>
#include <thread>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/config.h"
#include "common/net/job_process.h"
#include "common/placement.h"
#include "worker/collective.h"
#include "worker/export.h"
#include "worker/predict.h"
#include "worker/ps_client.h"
#include "worker/report.h"
#include "worker/selfcheck.h"
#include "worker/trainer.h"

DEFINE_string(mode, "train",
              "train: the training loop; selfcheck: verify pull/push against the servers; "
              "predict: score --predict_data with the checkpoint trainer.resume_from; "
              "export: write that checkpoint's model into --export_dir (worker/export.h)");
DEFINE_string(progress, "auto",
              "worker 0's progress: bar (redrawn line), log (a line every "
              "trainer.log_every_seconds) or auto (bar when stderr is a terminal)");
DEFINE_int32(ids, 100000, "selfcheck: IDs per worker and table");
DEFINE_int32(rounds, 3, "selfcheck: push/pull rounds");
DEFINE_string(predict_data, "", "predict: the input (din-tsv or data.format), a file or directory");
DEFINE_string(export_dir, "", "export: the directory to write the model export into");
DEFINE_string(predict_output, "", "predict: where to write one probability per input line");

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
    const Placement placement(cfg, LaneCounts(cluster.servers()));
    const ServerFigures servers = ServerFiguresOf(
        stats, cfg, cluster.num_servers(),
        [&](int t, uint32_t shard) { return placement.ServerOf(placement.GlobalShard(t, shard)); });
    const std::string line =
        SummaryJson(trainer->summary(), servers, cfg, cluster.num_workers(), cluster.num_servers(),
                    ReadBayesJson(cfg.data().test_path()));
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

Status ExportJob(const config::TrainConfig& cfg, Cluster& cluster) {
  if (cfg.trainer().resume_from().empty())
    return Status::InvalidArgument("export: no checkpoint (set trainer.resume_from or --resume)");
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  MpiCollective collective(cluster.role_comm());
  DIN_ASSIGN_OR_RETURN(Json figures, ExportModel(cfg, *client, collective, FLAGS_export_dir));
  if (cluster.role_rank() == 0) {
    std::printf("%s\n", JsonLine(figures).c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

Status PredictJob(const config::TrainConfig& cfg, Cluster& cluster) {
  if (cfg.trainer().resume_from().empty())
    return Status::InvalidArgument("predict: no checkpoint (set trainer.resume_from or --resume)");
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  MpiCollective collective(cluster.role_comm());
  PredictOptions options;
  options.data = FLAGS_predict_data;
  options.output = FLAGS_predict_output;
  options.num_servers = cluster.num_servers();
  DIN_ASSIGN_OR_RETURN(Json figures, Predict(cfg, *client, collective, options));
  if (cluster.role_rank() == 0) {
    std::printf("%s\n", JsonLine(figures).c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) {
  din::InitProcess(argv[0], "worker of the DIN trainer (started by mpirun)");
  din::StartStopSignalThread();  // before any other thread exists
  din::JobProcess job = din::StartJob(&argc, &argv);
  din::Cluster& cluster = *job.cluster;
  const din::config::TrainConfig& cfg = job.config;
  din::Status st = cluster.Rendezvous(din::Role::kWorker, "", din::TablesFingerprint(cfg));
  if (!st.ok()) cluster.Fail(st);
  if (FLAGS_mode == "selfcheck") {
    st = din::SelfCheck(cfg, cluster, {.ids = FLAGS_ids, .rounds = FLAGS_rounds});
  } else if (FLAGS_mode == "export") {
    st = din::ExportJob(cfg, cluster);
  } else if (FLAGS_mode == "predict") {
    st = din::PredictJob(cfg, cluster);
  } else if (FLAGS_mode == "train") {
    st = din::Train(cfg, cluster);
  } else {
    st = din::Status::InvalidArgument("unknown --mode " + FLAGS_mode);
  }
  if (!st.ok()) cluster.Fail(st);
  st = cluster.Barrier();
  if (!st.ok()) cluster.Fail(st);
  return din::g_stopped ? din::kExitStopped : 0;
}
