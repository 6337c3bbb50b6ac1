// reader_bench: how fast one thread turns din-tsv into Batches.
//
//   reader_bench [--input FILE] [--rows 200000] [--batch 256] [--repeat 3]
//                [--partitions V]
//
// Without --input it writes a din-tsv file shaped like din_gen's output (63-bit item
// IDs, histories of 0..50) to a temporary directory. It times, on the same file (in the
// page cache after the first pass, best of --repeat):
//   scan:    pread 4 MiB chunks + memchr for line breaks (the I/O + line-split floor),
//   parse:   Reader (file order) -> Batches of --batch,
//   shuffle: the same with 100000-sample shuffle blocks (best epoch after the first,
//            which also allocates the block's memory).
// With --partitions V > 0 also, in the same run, the StepReader of one worker (W = 1)
// reading all V partitions, global batch --batch, in file order (step_rows_per_s) and
// with the same 100000-sample shuffle memory split over the partitions
// (step_shuffled_rows_per_s).
// The last line of output is one JSON object: rows, bytes, rows_per_s, mb_per_s,
// scan_mb_per_s, parse_over_scan, shuffled_rows_per_s, us_per_batch, and with
// --partitions: partitions, step_rows_per_s, step_shuffled_rows_per_s.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/data/reader.h"
#include "common/data/step_reader.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/tsv_writer.h"

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Die(const std::string& what) {
  std::fprintf(stderr, "reader_bench: %s\n", what.c_str());
  std::exit(1);
}

void WriteSynthetic(const std::string& path, uint64_t rows) {
  din::TsvWriter out;
  if (const din::Status st = out.Open(path); !st.ok()) Die(st.message());
  std::vector<uint64_t> items, cates;
  for (uint64_t r = 0; r < rows; ++r) {
    const uint64_t h = din::Mix64(r);
    const int len = static_cast<int>(h % 51);
    items.clear();
    cates.clear();
    for (int j = 0; j < len; ++j) {
      items.push_back(din::Mix64(h + j + 1) >> 1);
      cates.push_back(1 + din::Mix64(h ^ (j + 7)) % 200);
    }
    out.DinTsvRow(h & 1, 1 + (h >> 8) % 100000, din::Mix64(h) >> 1, 1 + (h >> 20) % 200, items,
                  cates);
  }
  if (const din::Status st = out.Close(); !st.ok()) Die(st.message());
}

// Raw floor: read the file and find every line break; returns seconds.
double Scan(const std::string& path, uint64_t* lines) {
  const double t0 = Now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("cannot open " + path);
  std::vector<char> buf(4 << 20);
  uint64_t n = 0;
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r <= 0) break;
    const char* p = buf.data();
    const char* end = p + r;
    while ((p = static_cast<const char*>(std::memchr(p, '\n', end - p)))) {
      ++n;
      ++p;
    }
  }
  ::close(fd);
  *lines = n;
  return Now() - t0;
}

// Reads the whole file into Batches `epochs` times with one Reader; returns the seconds
// of the fastest epoch (the first one also allocates the reader's buffers).
double Parse(const std::string& path, uint32_t batch_size, uint32_t shuffle, int epochs,
             uint64_t* rows, uint64_t* batches) {
  din::config::DataConfig cfg;
  cfg.set_batch_size(batch_size);
  cfg.set_shuffle_buffer(shuffle);
  auto reader = din::Reader::Open(cfg, {path, 0, 1, shuffle > 1});
  if (!reader.ok()) Die(reader.status().ToString());
  din::Batch batch;
  double best = 1e300;
  for (int e = 0; e < epochs; ++e) {
    const double t0 = Now();
    uint64_t n = 0, b = 0;
    for (;;) {
      auto more = (*reader)->NextBatch(&batch);
      if (!more.ok()) Die(more.status().ToString());
      if (!*more) break;
      n += batch.size;
      ++b;
    }
    best = std::min(best, Now() - t0);
    *rows = n;
    *batches = b;
    (*reader)->StartNextEpoch();
  }
  return best;
}

// The same with a StepReader of V partitions, worker 0 of 1.
double ParseSteps(const std::string& path, uint32_t batch_size, uint32_t shuffle,
                  uint32_t partitions, int epochs, uint64_t* rows) {
  din::config::DataConfig cfg;
  cfg.set_batch_size(batch_size);
  cfg.set_shuffle_buffer(shuffle);
  cfg.set_partitions(partitions);
  cfg.set_train_path(path);
  auto reader = din::StepReader::Open(cfg, 0, 1);
  if (!reader.ok()) Die(reader.status().ToString());
  din::Batch batch;
  double best = 1e300;
  for (int e = 0; e < epochs; ++e) {
    const double t0 = Now();
    uint64_t n = 0;
    for (;;) {
      auto more = (*reader)->NextStep(&batch);
      if (!more.ok()) Die(more.status().ToString());
      if (!*more) break;
      n += batch.size;
    }
    best = std::min(best, Now() - t0);
    *rows = n;
    (*reader)->StartNextEpoch();
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string input;
  uint64_t rows = 200000;
  uint32_t batch = 256;
  int repeat = 3;
  uint32_t partitions = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Die("missing value after " + a);
    if (a == "--input") {
      input = argv[++i];
    } else if (a == "--rows") {
      rows = std::stoull(argv[++i]);
    } else if (a == "--batch") {
      batch = static_cast<uint32_t>(std::stoul(argv[++i]));
    } else if (a == "--repeat") {
      repeat = std::max(1, std::stoi(argv[++i]));
    } else if (a == "--partitions") {
      partitions = static_cast<uint32_t>(std::stoul(argv[++i]));
    } else {
      Die("unknown flag " + a +
          " (flags: --input FILE --rows N --batch N --repeat N --partitions V)");
    }
  }
  std::string tmp_dir;
  if (input.empty()) {
    char tmpl[] = "/tmp/reader_bench_XXXXXX";
    if (!::mkdtemp(tmpl)) Die("cannot create a temporary directory");
    tmp_dir = tmpl;
    input = tmp_dir + "/train.tsv";
    WriteSynthetic(input, rows);
  }
  const double bytes = static_cast<double>(std::filesystem::file_size(input));

  double scan = 1e300;
  uint64_t lines = 0, parsed = 0, batches = 0, shuffled_rows = 0, unused = 0;
  for (int r = 0; r < repeat; ++r) scan = std::min(scan, Scan(input, &lines));
  const double parse = Parse(input, batch, 0, repeat, &parsed, &batches);
  const double shuffled = Parse(input, batch, 100000, std::max(2, repeat), &shuffled_rows, &unused);
  uint64_t step_rows = 0, step_shuffled_rows = 0;
  double step = 0, step_shuffled = 0;
  if (partitions > 0) {
    step = ParseSteps(input, batch, 0, partitions, repeat, &step_rows);
    step_shuffled =
        ParseSteps(input, batch, 100000, partitions, std::max(2, repeat), &step_shuffled_rows);
    if (step_rows != parsed || step_shuffled_rows != parsed)
      Die("the step reader read another number of rows than the reader");
  }
  if (!tmp_dir.empty()) std::filesystem::remove_all(tmp_dir);

  const double mb = bytes / 1e6;
  std::printf("# %s: %.1f MB, %llu lines, %llu rows in %llu batches of %u\n", input.c_str(), mb,
              static_cast<unsigned long long>(lines), static_cast<unsigned long long>(parsed),
              static_cast<unsigned long long>(batches), batch);
  din::Json j;
  j["bench"] = "reader_bench";
  j["threads"] = 1;
  j["rows"] = parsed;
  j["bytes"] = din::JsonNumber(bytes, 0);
  j["batch"] = batch;
  j["rows_per_s"] = din::JsonNumber(parsed / parse, 0);
  j["mb_per_s"] = din::JsonNumber(mb / parse, 1);
  j["scan_mb_per_s"] = din::JsonNumber(mb / scan, 1);
  j["parse_over_scan"] = din::JsonNumber(scan / parse, 3);
  j["shuffled_rows_per_s"] = din::JsonNumber(shuffled_rows / shuffled, 0);
  j["us_per_batch"] = din::JsonNumber(1e6 * parse / std::max<uint64_t>(1, batches), 2);
  if (partitions > 0) {
    j["partitions"] = partitions;
    j["step_rows_per_s"] = din::JsonNumber(step_rows / step, 0);
    j["step_shuffled_rows_per_s"] = din::JsonNumber(step_shuffled_rows / step_shuffled, 0);
  }
  std::printf("%s\n", din::JsonLine(j).c_str());
  return 0;
}
