// Reads this worker's part of a din-tsv (or schema-described) input into Batches:
// partitioning, block shuffling, epochs, bad-line policy and a position that
// checkpoints can save and restore (docs/design.md §7, §13).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/batch.h"
#include "common/data/line_parser.h"
#include "common/data/partition.h"
#include "common/data/schema.h"
#include "common/proto/data_config.pb.h"
#include "common/rng.h"
#include "common/status.h"

namespace din {

class LineSource;

// Checks the reading options and the schema (what Reader::Open checks before touching
// any file), so a program can refuse a bad config at start-up.
Status ValidateDataConfig(const config::DataConfig& cfg);

// Thread safety: a Reader is used by one thread at a time.
//
// Epochs: NextBatch returns false once the partition is exhausted; StartNextEpoch()
// rewinds it. Each epoch visits every line of the partition once; with shuffling the
// order differs per epoch but is a function of (seed, worker, epoch) only.
//
// Bad lines: a malformed line yields `file:line: reason` with the line number counted
// in its file (also for byte-range partitions that start mid-file). With max_bad_lines
// = 0 the first one is returned as an InvalidArgument error; otherwise up to that many
// per reader are skipped and counted (bad_lines()), and one more is an error. Blank
// lines are skipped silently.
//
// Shuffling (shuffle_buffer = K > 1): the partition is read in blocks of K samples, each
// returned in a uniformly random order; the segments (files or byte ranges) of the
// partition are visited in a random order per epoch.
class Reader {
 public:
  struct Options {
    std::string path;  // file or directory
    int worker = 0;
    int workers = 1;
    bool shuffle = true;  // use the config's shuffle_buffer (false: file order)
  };

  // Lists the input, picks this worker's segments and checks the schema. Fails on a
  // bad schema or a missing/empty input.
  static Result<std::unique_ptr<Reader>> Open(const config::DataConfig& cfg, Options options);
  // The training split (shuffled) and the test split (file order) of `cfg`.
  static Result<std::unique_ptr<Reader>> OpenTrain(const config::DataConfig& cfg, int worker,
                                                   int workers);
  static Result<std::unique_ptr<Reader>> OpenTest(const config::DataConfig& cfg, int worker,
                                                  int workers);

  // A reader of part `part` of `parts` equal byte ranges of an input already listed
  // (PartitionByteRanges, never whole files), as StepReader opens its partitions. Its
  // stream depends on (input, seed, part, parts, epoch) and the options only.
  struct PartitionOptions {
    std::shared_ptr<const std::vector<InputFile>> files;  // ListInputFiles of the input
    int part = 0;
    int parts = 1;
    uint32_t shuffle_buffer = 0;  // shuffle block in samples; 0 or 1 = file order
    // Initial size of the line buffer; it grows (up to max_line_bytes + 2) only when a
    // line does not fit.
    size_t read_buffer_bytes = 256u << 10;
  };
  static Result<std::unique_ptr<Reader>> OpenPartition(const config::DataConfig& cfg,
                                                       PartitionOptions options);

  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Clears `batch` (keeping its buffers) and fills it with up to batch_size samples.
  // Returns true when it holds at least one sample, false at the end of the epoch
  // (then it is empty). Blocks on file reads. A worker whose partition holds no line
  // (more workers than lines) gets false at once.
  Result<bool> NextBatch(Batch* batch);

  // Appends up to `max_samples` next samples of the epoch to `batch` (which holds this
  // schema's columns: prepared by schema().PrepareBatch, or filled by this or a reader
  // of the same schema) and returns how many; fewer only at the end of the epoch, 0
  // once it is exhausted. NextBatch(b) is PrepareBatch(b) + NextSamples(b, batch_size).
  Result<size_t> NextSamples(Batch* batch, size_t max_samples);

  // Rewinds to the start of the partition for the next epoch.
  void StartNextEpoch();

  // The position: everything needed so that, after RestoreState on a Reader opened with
  // the same config, input and partition, NextBatch returns the same batches as this
  // one would. Opaque bytes (a serialized ReaderState, tens of bytes): with shuffling,
  // restoring re-reads the shuffle block in progress.
  std::string SaveState() const;
  // Fails (InvalidArgument) when the state belongs to other files, sizes, partition or
  // shuffle settings.
  Status RestoreState(std::string_view state);

  uint64_t epoch() const { return epoch_; }
  uint64_t bad_lines() const { return bad_lines_; }
  // The first few skipped lines' messages, `file:line: reason`.
  const std::vector<std::string>& bad_line_messages() const { return bad_messages_; }
  uint64_t samples_in_epoch() const { return samples_in_epoch_; }
  const Schema& schema() const { return schema_; }
  const std::vector<InputFile>& files() const { return *files_; }
  const std::vector<Segment>& segments() const { return segments_; }

  // The 1-based line number of the line starting at byte `offset` of file `file`,
  // counted by scanning the file (cached, so increasing offsets cost one pass).
  Result<uint64_t> LineNumberAt(uint32_t file, uint64_t offset);

 private:
  Reader(const config::DataConfig& cfg, Schema schema,
         std::shared_ptr<const std::vector<InputFile>> files, std::vector<Segment> segments,
         Options options, size_t shuffle_capacity, size_t read_buffer_bytes);

  // The next raw line of the partition in epoch order; false when exhausted. The views
  // in `*line` stay valid until the next call.
  struct RawLine {
    std::string_view text;
    uint32_t segment = 0;
    uint64_t offset = 0;
    bool too_long = false;
  };
  Result<bool> NextLine(RawLine* line);
  // Reads the next shuffle block into pool_ and draws its order.
  Status FillBlock();
  // Parses one line into `batch`, applying the bad-line policy.
  Status Consume(std::string_view text, uint32_t segment, uint64_t offset, bool too_long,
                 Batch* batch);
  Status OpenSegment(uint32_t position, const uint64_t* resume_offset);
  void ResetEpochOrder();
  uint64_t Fingerprint() const;

  const config::DataConfig cfg_;
  const Schema schema_;
  const LineParser parser_;
  const std::shared_ptr<const std::vector<InputFile>> files_;
  const std::vector<Segment> segments_;
  const Options options_;
  const size_t shuffle_capacity_;  // 0 = no shuffling

  uint64_t epoch_ = 0;
  std::vector<uint32_t> order_;  // segment indices in this epoch's order
  uint32_t position_ = 0;        // index into order_ of the segment being read
  std::unique_ptr<LineSource> source_;
  bool source_open_ = false;  // source_ reads order_[position_]
  SplitMix64 rng_{0};

  // Shuffling: pool_ holds the parsed block, returned in the order perm_.
  Batch pool_;
  std::vector<uint32_t> perm_;
  size_t emitted_ = 0;  // of perm_
  struct BlockStart {   // where pool_'s block was read from, for SaveState
    uint32_t position = 0;
    bool in_segment = false;
    uint64_t offset = 0;
    uint64_t rng = 0;
    uint64_t bad_lines = 0;
    uint64_t samples_in_epoch = 0;
  } block_;
  uint64_t samples_in_epoch_ = 0;
  uint64_t bad_lines_ = 0;
  std::vector<std::string> bad_messages_;

  // Line-number cache per file: newlines counted in [0, offset).
  struct LineCount {
    uint64_t offset = 0;
    uint64_t newlines = 0;
  };
  std::vector<LineCount> line_cache_;
  // The file LineNumberAt last scanned, kept open for the next bad line.
  int line_fd_ = -1;
  uint32_t line_fd_file_ = UINT32_MAX;
};

}  // namespace din
