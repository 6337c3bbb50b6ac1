// Which bytes of the input each of W workers reads (docs/design.md §7).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace din {

struct InputFile {
  std::string path;
  uint64_t size = 0;
};

// A worker reads the lines of `file` whose FIRST byte lies in [begin, end). Lines are
// therefore never split: a line that straddles `end` is read whole by this worker, and
// the worker owning the next range skips it.
struct Segment {
  uint32_t file = 0;  // index into the input file list
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The input at `path`: the file itself, or the regular files of a directory (names not
// starting with '.' or '_', in name order, empty ones left out). Errors: a missing
// path, an empty file given by name, a directory with no non-empty file.
Result<std::vector<InputFile>> ListInputFiles(const std::string& path);

// The segments worker `worker` of `workers` reads. Over all workers every byte of every
// file lies in exactly one segment, so every line is read by exactly one worker.
// Whole files are handed out (largest first, each to the least loaded worker) when
// that keeps every worker within 10% of an equal share; otherwise the concatenated
// input is cut into W equal byte ranges. Deterministic in (files, sizes, W).
std::vector<Segment> PartitionInput(const std::vector<InputFile>& files, int worker, int workers);

// Part `part` of `parts` equal byte ranges of the concatenated input (whole files never
// considered), so every part holds within one line of total/parts bytes whatever the
// file layout; a part may span several files. Over all parts every byte of every file
// lies in exactly one segment. Deterministic in (files, sizes, parts).
std::vector<Segment> PartitionByteRanges(const std::vector<InputFile>& files, int part, int parts);

}  // namespace din
