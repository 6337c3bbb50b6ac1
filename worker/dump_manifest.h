// The worker side of an embedding dump (docs/design.md §12; layout in common/dump_format.h):
// every server lane writes its own shards in parallel, then worker 0 writes MANIFEST
// and, last, _SUCCESS. A directory without _SUCCESS is not a complete dump.
//
// Paths: the servers open the files themselves, so the dump directory must be the same
// filesystem for every server and for worker 0: one machine (mpirun starts every
// process in the same working directory), or a shared mount on a cluster. DumpTables
// makes `dir` absolute against worker 0's working directory before sending it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/proto/config.pb.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "worker/ps_client.h"

namespace din {

// Writes a complete dump of every table of `cfg` into `dir` (created if needed) and
// blocks until _SUCCESS is on disk. `step` is recorded in the MANIFEST. Call from one
// worker (worker 0) while no push is in flight: each lane writes its shards between two
// requests, so a push sent concurrently may or may not be in the dump. A _SUCCESS left
// by an earlier dump in `dir` is removed first; part files are overwritten.
Status DumpTables(PsClient& client, const config::TrainConfig& cfg, const std::string& dir,
                  uint64_t step, const DumpOptions& options = {});

// A checkpoint of every table: DumpTables with options.with_state (ids, weights,
// optimizer state and counts of every row, byte for byte; the MANIFEST records each
// table's optimizer and state size). LoadTables restores it into servers of any number
// and shard counts.
Status SaveTables(PsClient& client, const config::TrainConfig& cfg, const std::string& dir,
                  uint64_t step, DumpOptions options = {});

// Inserts into the servers the rows of the checkpoint in `dir` that belong to each
// lane's shards under `cfg` (the config the servers run). Refuses, naming the file, a
// directory without _SUCCESS, a file whose size or XXH64 differs from the MANIFEST, a
// dump without optimizer state, a missing table, or a dim, optimizer or state size other
// than the config's; a refused checkpoint loads nothing (every file is verified before
// the LOAD unless options.files_verified). Call before training starts,
// while no other request is in flight. Returns the rows inserted (over all lanes).
Result<uint64_t> LoadTables(PsClient& client, const config::TrainConfig& cfg,
                            const std::string& dir, const LoadOptions& options = {});

// Checks that `parts` (the servers' DUMP replies) cover every (table, shard) of `cfg`
// exactly once, then writes dir/MANIFEST (durably, via a temporary name) and then
// dir/_SUCCESS.
// `base` and `parent`: an incremental dump's lineage (Manifest), empty for others.
Status WriteDumpManifest(const std::string& dir, const config::TrainConfig& cfg, uint64_t step,
                         const std::vector<wire::DumpPart>& parts, const std::string& base = "",
                         const std::string& parent = "");

}  // namespace din
