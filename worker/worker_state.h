// A worker's side of checkpoints (layout and file-level rules in worker/checkpoint.h):
// its own state file, ckpt::WorkerState (common/proto/checkpoint.proto) — dense
// parameters, dense Adam state, Dice running statistics, the training reader's position
// and the progress counters — and the collective steps of writing a checkpoint and of
// opening one to resume from, which also save and load the tables through worker 0.
//
// EncodeWorkerState and DecodeWorkerState are plain functions. WriteCheckpoint and
// OpenCheckpoint are collective: every worker calls them at the same point, with no push
// of its own in flight. None of them owns what it is given.
//
// Thread safety: none; the thread that drives the training makes every call.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/model/dense_adam.h"
#include "worker/ps_client.h"

namespace din {

// Where training stands, so that a resumed run continues (and reports) as an
// uninterrupted one would.
struct TrainingPosition {
  uint64_t step = 0;   // steps done (all workers advance together)
  uint32_t epoch = 0;  // 0-based epoch in progress
  double epoch_loss_sum = 0;
  uint64_t epoch_samples = 0;
  uint64_t samples_trained = 0;
  uint64_t train_rows = 0;
};

// Views of a worker's dense state: a ModelBackend's params() and running_stats() and
// the dense optimizer (its moments and step).
struct DenseState {
  std::span<float> params;
  std::span<float> running;
  model::DenseAdam* adam = nullptr;
};

// The serialized ckpt::WorkerState of worker `worker` of `workers`. `reader_state`: the
// training reader's SaveState at `position`; `backend`: the model backend's name.
Result<std::string> EncodeWorkerState(int worker, int workers, const TrainingPosition& position,
                                      const std::string& reader_state, const std::string& backend,
                                      const DenseState& dense);

struct DecodedWorkerState {
  TrainingPosition position;
  std::string reader_state;  // for Reader::RestoreState
};
// Restores `bytes` (a worker state read from `file`, which errors name) into `dense`.
// Refuses, changing nothing, a state that does not parse or lacks a field, one of
// another worker or worker count, or one whose dense arrays differ in size from the
// model's (a checkpoint of another model configuration).
Result<DecodedWorkerState> DecodeWorkerState(const std::string& bytes, const std::string& file,
                                             int worker, int workers, const DenseState& dense);

// Writes the checkpoint of `step` into trainer.checkpoint.dir: every worker's `state`
// (EncodeWorkerState), the tables (saved through worker 0) and the manifest, then
// completes it (FinishCheckpoint: _SUCCESS, rename, retention of trainer.checkpoint.keep).
// `num_servers` is recorded in the manifest. Collective; returns once the checkpoint is
// complete, with its directory.
Result<std::string> WriteCheckpoint(Collective& collective, PsClient& client,
                                    const config::TrainConfig& cfg, int num_servers, uint64_t step,
                                    uint32_t epoch, const std::string& state);

// A checkpoint opened to resume from.
struct OpenedCheckpoint {
  std::string dir;    // the checkpoint directory
  std::string state;  // this worker's state file (for DecodeWorkerState)
  std::string file;   // its path
};
// Worker 0 picks the checkpoint trainer.resume_from designates (FindCheckpoint; it must
// verify and have been written by as many workers as there are now) and loads its tables
// into the servers; every worker then reads its own state file. Collective; returns once
// the rows are in place on every server.
Result<OpenedCheckpoint> OpenCheckpoint(Collective& collective, PsClient& client,
                                        const config::TrainConfig& cfg);

}  // namespace din
