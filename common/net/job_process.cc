#include "common/net/job_process.h"

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/allocator.h"
#include "common/config_override.h"

DEFINE_string(config, "", "training configuration (text-format TrainConfig, *.pbtxt)");

namespace din {

void InitProcess(const char* argv0, const char* usage) {
  ConfigureAllocator();
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv0);
  gflags::SetUsageMessage(usage);
}

JobProcess StartJob(int* argc, char*** argv) {
  JobProcess job;
  job.cluster = std::make_unique<Cluster>(argc, argv);
  // `--set PATH=VALUE` may repeat, which gflags cannot express: taken out of argv first.
  auto overrides = ExtractRepeatedFlag("set", argc, *argv);
  if (!overrides.ok()) job.cluster->Fail(overrides.status());
  gflags::ParseCommandLineFlags(argc, argv, true);
  if (FLAGS_config.empty()) job.cluster->Fail(Status::InvalidArgument("--config is required"));
  auto cfg = LoadConfigWithOverrides(FLAGS_config, *overrides);
  if (!cfg.ok()) job.cluster->Fail(cfg.status());
  job.config = std::move(*cfg);
  return job;
}

}  // namespace din
