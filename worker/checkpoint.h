// Checkpoint directories (docs/design.md §13): finding, verifying, finishing and pruning them.
//
// Layout of one checkpoint, ROOT/ckpt-SSSSSSSSSSSS (S = the step, 12 digits, so names
// sort by step):
//   tables/                  the tables with optimizer state and counts (SaveTables:
//                            TABLE/part-*.{ids,emb,state,count}.npy, MANIFEST, _SUCCESS)
//   worker-WWWWW.state       each worker's WorkerState (common/proto/checkpoint.proto)
//   CHECKPOINT               CheckpointManifest, text format: step, epoch, workers,
//                            servers, size and XXH64 of every worker state, the config
//   _SUCCESS                 written last
// It is written as ROOT/ckpt-S.tmp and renamed to ROOT/ckpt-S once _SUCCESS is durable,
// so a crash leaves either a complete checkpoint or a .tmp directory that no reader
// takes. The trainer (worker/trainer.cc) drives the writing; these functions hold the
// file-level rules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/proto/checkpoint.pb.h"
#include "common/status.h"

namespace din {

inline constexpr char kCheckpointManifestName[] = "CHECKPOINT";

// "ckpt-000000001234" for step 1234.
std::string CheckpointName(uint64_t step);
// "worker-00003.state" for worker 3.
std::string WorkerStateName(int worker);

// Checks that `dir` is a complete, intact checkpoint: _SUCCESS present, CHECKPOINT
// parses, every worker state and every table file has the size and XXH64 its manifest
// records (read in chunks, not held in memory). The error names the file.
Result<ckpt::CheckpointManifest> VerifyCheckpoint(const std::string& dir);

// The checkpoint to resume from. `path` is either a checkpoint (it has a CHECKPOINT
// file or is named ckpt-*), which must verify, or a directory of checkpoints, whose
// complete ones are tried newest first: one that fails VerifyCheckpoint is refused with
// a warning naming why (appended to *refused) and the one before it is tried. Fails
// when none verifies. *manifest (when given) gets the chosen one's CHECKPOINT file, so
// that nothing needs to verify it twice.
Result<std::string> FindCheckpoint(const std::string& path, std::vector<std::string>* refused,
                                   ckpt::CheckpointManifest* manifest = nullptr);

// The checkpoint directories under `root` named ckpt-<digits> (not .tmp), by step,
// oldest first. Completeness is not checked.
std::vector<std::pair<uint64_t, std::string>> ListCheckpoints(const std::string& root);

// Writes `bytes` to dir/name durably and returns its manifest entry.
Result<ckpt::CheckpointFile> WriteCheckpointFile(const std::string& dir, const std::string& name,
                                                 const std::string& bytes);

// Completes the checkpoint being written in `tmp_dir` (ROOT/ckpt-S.tmp, whose tables/
// and worker states are on disk): writes CHECKPOINT and _SUCCESS durably, renames the
// directory to ROOT/ckpt-S (replacing an earlier checkpoint of the same step), syncs
// ROOT, then deletes all but the newest `keep` complete checkpoints and any stale
// .tmp directory. Returns the final path.
Result<std::string> FinishCheckpoint(const std::string& tmp_dir,
                                     const ckpt::CheckpointManifest& manifest, uint32_t keep);

}  // namespace din
