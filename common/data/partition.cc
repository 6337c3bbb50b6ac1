#include "common/data/partition.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

namespace din {

Result<std::vector<InputFile>> ListInputFiles(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return Status::NotFound(path + ": no such file or directory");
  std::vector<InputFile> files;
  if (fs::is_directory(st)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name[0] == '.' || name[0] == '_') continue;
      std::error_code ec2;
      if (!entry.is_regular_file(ec2)) continue;
      const uint64_t size = entry.file_size(ec2);
      if (ec2) return Status::IoError(entry.path().string() + ": " + ec2.message());
      if (size == 0) continue;
      files.push_back({entry.path().string(), size});
    }
    if (ec) return Status::IoError(path + ": cannot list directory: " + ec.message());
    if (files.empty()) return Status::NotFound(path + ": directory has no non-empty data files");
    std::sort(files.begin(), files.end(),
              [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
    return files;
  }
  const uint64_t size = fs::file_size(path, ec);
  if (ec) return Status::IoError(path + ": " + ec.message());
  if (size == 0) return Status::InvalidArgument(path + ": file is empty");
  files.push_back({path, size});
  return files;
}

std::vector<Segment> PartitionInput(const std::vector<InputFile>& files, int worker, int workers) {
  CHECK_GE(worker, 0);
  CHECK_LT(worker, workers);
  uint64_t total = 0;
  for (const auto& f : files) total += f.size;
  std::vector<Segment> out;
  if (total == 0) return out;

  // Whole files, longest-processing-time-first.
  std::vector<uint32_t> order(files.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return files[a].size > files[b].size; });
  std::vector<uint64_t> load(workers, 0);
  std::vector<int> owner(files.size());
  for (uint32_t f : order) {
    const int w = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[f] = w;
    load[w] += files[f].size;
  }
  const uint64_t max_load = *std::max_element(load.begin(), load.end());
  // max_load <= 1.1 * total / workers, in integers.
  if (static_cast<unsigned __int128>(max_load) * workers * 10 <=
      static_cast<unsigned __int128>(total) * 11) {
    for (uint32_t f = 0; f < files.size(); ++f)
      if (owner[f] == worker) out.push_back({f, 0, files[f].size});
    return out;
  }
  return PartitionByteRanges(files, worker, workers);
}

std::vector<Segment> PartitionByteRanges(const std::vector<InputFile>& files, int part, int parts) {
  CHECK_GE(part, 0);
  CHECK_LT(part, parts);
  uint64_t total = 0;
  for (const auto& f : files) total += f.size;
  const auto cut = [&](int p) {
    return static_cast<uint64_t>(static_cast<unsigned __int128>(total) * p / parts);
  };
  const uint64_t lo = cut(part), hi = cut(part + 1);
  std::vector<Segment> out;
  uint64_t start = 0;
  for (uint32_t f = 0; f < files.size(); ++f) {
    const uint64_t end = start + files[f].size;
    const uint64_t b = std::max(lo, start), e = std::min(hi, end);
    if (b < e) out.push_back({f, b - start, e - start});
    start = end;
  }
  return out;
}

}  // namespace din
