// Reads one worker's share of each global batch of the training input: data.batch_size
// samples per step across all W workers, the same sequence of global batches for any W.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/batch.h"
#include "common/data/reader.h"
#include "common/data/schema.h"
#include "common/proto/data_config.pb.h"
#include "common/status.h"

namespace din {

// Virtual partitions: the training input is cut into V = data.partitions equal byte
// ranges of the concatenated files (PartitionByteRanges; lines are never split), V
// independent of W (0 = min(64, batch_size)). Worker w of W reads the partitions v
// with v % W == w, each through its own Reader, whose stream is a function of (input,
// seed, v, V, epoch) only: blocks of max(2, shuffle_buffer / V) samples returned in a
// random order (so all partitions together hold about shuffle_buffer samples), segment
// order and block orders seeded by (seed, v, epoch); in file order when shuffle_buffer
// is 0 or 1.
//
// Steps: with B = batch_size, global batch t takes b_v = B / V samples (one more for
// v < B % V) from partition v, the next ones of its stream. Worker w's share of step t
// is the concatenation, in increasing v, of its partitions' contributions. Hence the
// concatenation over v of all contributions, i.e. the global batch, is the same list of
// samples for every W. Requires 1 <= V <= B (every partition contributes every step;
// ValidateDataConfig) and W <= V (Open fails otherwise).
//
// End of an epoch: an exhausted partition contributes nothing, so the last steps of an
// epoch are smaller than B and the shares uneven. NextStep returns false (empty batch)
// once all of this worker's partitions are exhausted, while other workers may still
// have samples: such a worker keeps taking part in the steps with an empty share. The
// epoch ends when every partition is exhausted; the workers must agree on that
// themselves (the trainer does so through its per-step all-reduce, e.g. of the global
// sample count), then each calls StartNextEpoch. Calling NextStep again after it
// returned false keeps returning false.
//
// Bad lines: max_bad_lines applies to each partition reader (so whether and where a job
// stops on malformed lines does not depend on W); bad_lines() and bad_line_messages()
// aggregate this worker's partitions.
//
// Memory: each partition reader holds one shuffle block (shuffle_buffer / V samples)
// and a line buffer of at most 256 KiB (less with many partitions per worker; it grows
// only for lines longer than the buffer, up to max_line_bytes + 2).
//
// Thread safety: used by one thread at a time.
class StepReader {
 public:
  // The training split (data.train_path), shuffled per the config. Fails on a bad
  // config or input, and when workers > V.
  static Result<std::unique_ptr<StepReader>> Open(const config::DataConfig& cfg, int worker,
                                                  int workers);

  StepReader(const StepReader&) = delete;
  StepReader& operator=(const StepReader&) = delete;

  // Clears `batch` (keeping its buffers) and fills it with this worker's share of the
  // next global batch. False when all this worker's partitions are exhausted (then the
  // batch is empty). Blocks on file reads.
  Result<bool> NextStep(Batch* batch);

  // Rewinds every partition of this worker for the next epoch (each reshuffles by
  // (seed, v, epoch)).
  void StartNextEpoch();

  // The position of every partition of this worker, as one opaque serialized
  // StepReaderState. RestoreState on a StepReader opened with the same input, V, worker
  // and worker count, seed and shuffle settings makes NextStep return the same shares
  // as this one would (batch_size may differ; the partitions' positions stay valid).
  std::string SaveState() const;
  // Fails (InvalidArgument) on a state of another V, another partition set (worker or
  // worker count), other input files or shuffle settings; after a failure the position
  // is unspecified.
  Status RestoreState(std::string_view state);

  uint64_t epoch() const { return epoch_; }
  uint64_t bad_lines() const;
  // The skipped lines' messages of every partition (the first few of each), in
  // partition order.
  std::vector<std::string> bad_line_messages() const;
  // Samples this worker returned in the current epoch.
  uint64_t samples_in_epoch() const;
  const Schema& schema() const { return schema_; }
  // V.
  uint32_t partitions() const { return partitions_; }
  // This worker's partitions, increasing.
  const std::vector<uint32_t>& owned_partitions() const { return owned_; }
  // The samples each of owned_partitions() contributed to the last NextStep.
  const std::vector<uint32_t>& last_step_counts() const { return last_counts_; }
  // What this worker contributes to a full step (sum of its partitions' b_v).
  uint32_t share_of_step() const { return share_; }
  // B, the samples of a full global batch.
  uint32_t global_batch() const { return global_batch_; }
  const std::vector<InputFile>& files() const { return *files_; }

 private:
  StepReader(const config::DataConfig& cfg, Schema schema,
             std::shared_ptr<const std::vector<InputFile>> files, uint32_t partitions,
             std::vector<uint32_t> owned, std::vector<std::unique_ptr<Reader>> readers);
  uint64_t Fingerprint() const;

  const config::DataConfig cfg_;
  const Schema schema_;
  const std::shared_ptr<const std::vector<InputFile>> files_;
  const uint32_t partitions_;
  const uint32_t global_batch_;
  const std::vector<uint32_t> owned_;
  std::vector<uint32_t> take_;  // b_v of each owned partition
  uint32_t share_ = 0;
  std::vector<std::unique_ptr<Reader>> readers_;  // aligned with owned_
  std::vector<uint32_t> last_counts_;
  uint64_t epoch_ = 0;
};

// V for `cfg`: data.partitions, or min(64, batch_size) when it is 0.
uint32_t StepPartitions(const config::DataConfig& cfg);

}  // namespace din
