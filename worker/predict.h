// Scoring with a trained model (din_worker --mode=predict, launch/din-train --predict):
// the servers load a checkpoint's tables, every worker loads its dense network and
// predicts its part of an input file, and worker 0 writes one prediction per input
// line, in input order, and the metrics over them.
//
// Prediction changes nothing: its pulls are evaluation pulls, which create no row (an
// ID the checkpoint lacks reads as a zero row, as in evaluation). The checkpoint may
// have been written by any number of workers, and the servers may number any count.
// The Dice running statistics are the mean of the checkpoint's workers' (what the
// trainer's evaluations use), so scoring the training job's own test file reproduces
// its final evaluation.
//
// Thread safety: none; one thread per worker calls Predict, all workers together.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/json.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/ps_client.h"

namespace din {

// Reads the dense network of checkpoint `dir`, written by `workers` workers under the
// model config `model`, into `params` and `running` (a backend's params() and
// running_stats()): the parameters (every worker holds the same) and the mean of the
// workers' Dice running statistics, as the trainer's evaluations average them. Fails,
// naming the file, on a missing or damaged state or one of another model shape.
Status LoadInferenceDense(const std::string& dir, int workers, const config::ModelConfig& model,
                          std::span<float> params, std::span<float> running);

// The checkpoint trainer.resume_from designates, as worker 0 finds and verifies it
// (FindCheckpoint, VerifyCheckpoint), told to every worker. Collective.
struct ChosenCheckpoint {
  std::string dir;
  int workers = 0;  // that wrote it
  uint64_t step = 0;
};
Result<ChosenCheckpoint> ChooseCheckpoint(const config::TrainConfig& cfg, Collective& collective);

struct PredictOptions {
  std::string data;    // din-tsv or schema-described input: a file or a directory
  std::string output;  // one probability per line (worker 0 writes it)
  int num_servers = 1;
};

// Loads the checkpoint trainer.resume_from designates, predicts `options.data` and
// writes `options.output`. Collective. On worker 0 returns the figures of the run
// (predictions, AUC, GAUC and logloss when the labels hold both classes, the servers'
// rows before and after); the other workers get an empty object. Any malformed input
// line is an error naming it (a skipped line would shift the output).
Result<Json> Predict(const config::TrainConfig& cfg, PsClient& client, Collective& collective,
                     const PredictOptions& options);

}  // namespace din
