// dump_bench: how close an embedding dump comes to the disk's sequential write speed.
// Fills one shard with --rows rows of --dim floats, dumps it with DumpShard (ids + emb
// .npy files, fsync'ed, as a server lane does) and, in the same run and directory, writes
// the same number of bytes with plain 1 MiB write() calls and one fdatasync (what
// `dd bs=1M conv=fdatasync` measures). Each is run --repeats times, alternating; the best
// of each is reported. The same for a checkpoint of the shard (ids, weights, Adagrad
// state and counts, as SaveTables has a lane write them). Files are removed afterwards.
// Prints one JSON line:
//   rows, dim, bytes, dump_seconds, disk_seconds, dump_gb_per_s, disk_gb_per_s, ratio,
//   checkpoint_bytes, checkpoint_gb_per_s, checkpoint_disk_gb_per_s, checkpoint_ratio
// (GB = 1e9 bytes; ratio = dump_gb_per_s / disk_gb_per_s for the same byte count).
// --dir should be on the disk of interest (the default is under the working directory,
// not /tmp, which may be memory-backed).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include <gflags/gflags.h>

#include "common/hash.h"
#include "common/json.h"
#include "ps/dump_writer.h"
#include "ps/shard_store.h"

DEFINE_uint64(rows, 10'000'000, "rows in the dumped shard");
DEFINE_uint32(dim, 16, "row width");
DEFINE_string(dir, "dump_bench.tmp", "scratch directory (created, then removed)");
DEFINE_int32(repeats, 2, "runs of each measurement; the best is reported");

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Sequential write of `bytes` bytes in 1 MiB blocks, then fdatasync: seconds taken.
double DiskWrite(const std::string& path, uint64_t bytes) {
  std::vector<char> block(1 << 20);
  for (size_t i = 0; i < block.size(); i += 8) {
    const uint64_t v = din::Mix64(i);
    std::memcpy(block.data() + i, &v, 8);
  }
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  for (uint64_t left = bytes; left > 0;) {
    const size_t n = std::min<uint64_t>(left, block.size());
    const ssize_t w = ::write(fd, block.data(), n);
    if (w <= 0) {
      std::perror(path.c_str());
      std::exit(1);
    }
    left -= static_cast<uint64_t>(w);
  }
  if (::fdatasync(fd) != 0) std::perror("fdatasync");
  ::close(fd);
  const double s = Since(t0);
  std::filesystem::remove(path);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  const uint32_t dim = FLAGS_dim;
  const std::string dir = FLAGS_dir;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  // Adagrad keeps one accumulator per weight: state_floats = dim.
  din::ShardStore store(dim, dim, FLAGS_rows);
  for (uint64_t i = 0; i < FLAGS_rows; ++i) {
    bool inserted = false;
    auto row = store.FindOrInsert(din::Mix64(i), &inserted);
    if (!row.ok()) {
      std::fprintf(stderr, "%s\n", row.status().ToString().c_str());
      return 1;
    }
    float* w = store.Weights(*row);
    for (uint32_t d = 0; d < dim; ++d) w[d] = static_cast<float>(i % 1000) * 1e-3f + d;
    float* st = store.State(*row);
    for (uint32_t d = 0; d < dim; ++d) st[d] = 0.1f + static_cast<float>(d);
  }

  // One timed write of the shard (dump or checkpoint) and the plain write of as many
  // bytes; keeps the best of each.
  auto measure = [&](bool checkpoint, double* write_s, double* disk_s, uint64_t* bytes) {
    din::ShardDumpSpec spec{dir, "bench", 0, 1, false, false};
    spec.counts = checkpoint;
    spec.state = checkpoint;
    const auto t0 = Clock::now();
    auto files = din::DumpShard(store, spec);
    const double s = Since(t0);
    if (!files.ok()) {
      std::fprintf(stderr, "dump: %s\n", files.status().ToString().c_str());
      std::exit(1);
    }
    *bytes = 0;
    for (const auto& f : *files) *bytes += f.bytes;
    *write_s = std::min(*write_s, s);
    std::filesystem::remove_all(dir + "/bench");
    *disk_s = std::min(*disk_s, DiskWrite(dir + "/sequential.bin", *bytes));
  };
  double dump_s = 1e30, disk_s = 1e30, ckpt_s = 1e30, ckpt_disk_s = 1e30;
  uint64_t bytes = 0, ckpt_bytes = 0;
  for (int r = 0; r < FLAGS_repeats; ++r) {
    measure(false, &dump_s, &disk_s, &bytes);
    measure(true, &ckpt_s, &ckpt_disk_s, &ckpt_bytes);
  }
  std::filesystem::remove_all(dir);
  const double ckpt_gbs = ckpt_bytes / ckpt_s / 1e9;
  const double ckpt_disk_gbs = ckpt_bytes / ckpt_disk_s / 1e9;

  const double dump_gbs = bytes / dump_s / 1e9;
  const double disk_gbs = bytes / disk_s / 1e9;
  din::Json j;
  j["bench"] = "dump_bench";
  j["rows"] = FLAGS_rows;
  j["dim"] = dim;
  j["bytes"] = bytes;
  j["dump_seconds"] = din::JsonNumber(dump_s, 3);
  j["disk_seconds"] = din::JsonNumber(disk_s, 3);
  j["dump_gb_per_s"] = din::JsonNumber(dump_gbs, 3);
  j["disk_gb_per_s"] = din::JsonNumber(disk_gbs, 3);
  j["ratio"] = din::JsonNumber(dump_gbs / disk_gbs, 3);
  j["checkpoint_bytes"] = ckpt_bytes;
  j["checkpoint_seconds"] = din::JsonNumber(ckpt_s, 3);
  j["checkpoint_gb_per_s"] = din::JsonNumber(ckpt_gbs, 3);
  j["checkpoint_disk_gb_per_s"] = din::JsonNumber(ckpt_disk_gbs, 3);
  j["checkpoint_ratio"] = din::JsonNumber(ckpt_gbs / ckpt_disk_gbs, 3);
  std::printf("%s\n", din::JsonLine(j).c_str());
  return 0;
}
