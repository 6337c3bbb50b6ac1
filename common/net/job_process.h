// The start-up every MPI program of a job shares (din_ps, din_worker, ps_bench, the
// distributed tests): malloc settings, logging, MPI, `--set` overrides, command-line
// flags and the config named by `--config`.
//
//   int main(int argc, char** argv) {
//     din::InitProcess(argv[0], "what this program is");
//     ...                                 // anything that must precede MPI and threads
//     din::JobProcess job = din::StartJob(&argc, &argv);
//     ... job.cluster->Rendezvous(...), job.config ...
//   }
//
// Every error after MPI has started (a `--set` without value, an unknown flag, no
// --config, a config that does not load or validate) ends the whole job through
// Cluster::Fail, naming this process, so no peer is left waiting.
#pragma once

#include <memory>

#include <gflags/gflags_declare.h>

#include "common/net/cluster.h"
#include "common/proto/config.pb.h"

DECLARE_string(config);

namespace din {

// Malloc settings (ConfigureAllocator), glog to stderr, the usage message. First thing
// in main(), before any thread exists.
void InitProcess(const char* argv0, const char* usage);

struct JobProcess {
  std::unique_ptr<Cluster> cluster;  // MPI is finalised when it is destroyed
  config::TrainConfig config;        // --config with every --set applied, validated
};

// Starts MPI (one Cluster per process), removes every `--set PATH=VALUE` from argv,
// parses the remaining flags (unknown ones are an error) and loads --config with the
// overrides applied. Does not rendezvous: servers bind their sockets first.
JobProcess StartJob(int* argc, char*** argv);

}  // namespace din
