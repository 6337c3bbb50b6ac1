#include "worker/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include <glog/logging.h>
#include <google/protobuf/text_format.h>

#include "common/dump_format.h"

namespace din {
namespace {

namespace fs = std::filesystem;

constexpr char kPrefix[] = "ckpt-";
constexpr char kTmpSuffix[] = ".tmp";

std::string Hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

// Size and XXH64 of dir/name against the expected ones, reading 1 MiB at a time.
Status VerifyFile(const std::string& dir, const std::string& name, uint64_t bytes, uint64_t xxh64) {
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::NotFound(path + ": cannot open: " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  Xxh64 h;
  uint64_t total = 0;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), f);
    if (n == 0) break;
    h.Update(buf.data(), n);
    total += n;
  }
  const bool err = std::ferror(f) != 0;
  std::fclose(f);
  if (err) return Status::IoError(path + ": read error");
  if (total != bytes)
    return Status::InvalidArgument(path + ": " + std::to_string(total) +
                                   " bytes, the manifest says " + std::to_string(bytes) +
                                   " (truncated or replaced)");
  if (h.Digest() != xxh64)
    return Status::InvalidArgument(path + ": XXH64 " + Hex(h.Digest()) +
                                   " differs from the manifest's " + Hex(xxh64) + " (corrupt)");
  return Status::Ok();
}

bool ParseStep(const std::string& name, uint64_t* step) {
  if (name.size() <= std::strlen(kPrefix) || name.rfind(kPrefix, 0) != 0) return false;
  const std::string digits = name.substr(std::strlen(kPrefix));
  if (digits.empty() || digits.size() > 19) return false;
  for (char c : digits)
    if (c < '0' || c > '9') return false;
  *step = std::stoull(digits);
  return true;
}

}  // namespace

std::string CheckpointName(uint64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%s%012" PRIu64, kPrefix, step);
  return buf;
}

std::string WorkerStateName(int worker) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "worker-%05d.state", worker);
  return buf;
}

Result<ckpt::CheckpointManifest> VerifyCheckpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound(dir + " is not a directory");
  if (!fs::exists(fs::path(dir) / kSuccessName, ec))
    return Status::InvalidArgument(dir + ": no " + std::string(kSuccessName) +
                                   " (the checkpoint was not completed)");
  std::ifstream in(fs::path(dir) / kCheckpointManifestName);
  if (!in)
    return Status::InvalidArgument(dir + ": no " + std::string(kCheckpointManifestName) + " file");
  std::stringstream text;
  text << in.rdbuf();
  ckpt::CheckpointManifest m;
  if (!google::protobuf::TextFormat::ParseFromString(text.str(), &m))
    return Status::InvalidArgument(dir + "/" + kCheckpointManifestName + ": cannot parse");
  if (m.version() != 1)
    return Status::InvalidArgument(dir + "/" + kCheckpointManifestName + ": unknown version " +
                                   std::to_string(m.version()));
  if (static_cast<uint32_t>(m.files_size()) != m.workers())
    return Status::InvalidArgument(dir + "/" + kCheckpointManifestName + ": " +
                                   std::to_string(m.files_size()) + " worker states for " +
                                   std::to_string(m.workers()) + " workers");
  for (const auto& f : m.files()) {
    uint64_t want = 0;
    if (f.xxh64().size() != 16 || std::sscanf(f.xxh64().c_str(), "%16" SCNx64, &want) != 1)
      return Status::InvalidArgument(dir + "/" + kCheckpointManifestName + ": bad checksum of " +
                                     f.name());
    if (f.name().find('/') != std::string::npos)
      return Status::InvalidArgument(dir + "/" + kCheckpointManifestName + ": bad file name " +
                                     f.name());
    DIN_RETURN_IF_ERROR(VerifyFile(dir, f.name(), f.bytes(), want));
  }
  const std::string tables = dir + "/tables";
  DIN_ASSIGN_OR_RETURN(Manifest tm, ReadCompleteManifest(tables));
  for (const auto& t : tm.tables) {
    if (!t.checkpoint())
      return Status::InvalidArgument(tables + ": table " + t.name + " has no optimizer state");
    for (const auto& p : t.parts)
      for (const auto& f : p.files)
        DIN_RETURN_IF_ERROR(VerifyFile(tables, f.name, f.bytes, f.xxh64));
  }
  return m;
}

std::vector<std::pair<uint64_t, std::string>> ListCheckpoints(const std::string& root) {
  std::vector<std::pair<uint64_t, std::string>> out;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    uint64_t step = 0;
    const std::string name = it->path().filename().string();
    if (ParseStep(name, &step) && it->is_directory(ec)) out.emplace_back(step, it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::string> FindCheckpoint(const std::string& path, std::vector<std::string>* refused,
                                   ckpt::CheckpointManifest* manifest) {
  std::error_code ec;
  if (!fs::is_directory(path, ec))
    return Status::NotFound("resume: " + path + " is not a directory");
  uint64_t step = 0;
  if (fs::exists(fs::path(path) / kCheckpointManifestName, ec) ||
      ParseStep(fs::path(path).filename().string(), &step)) {
    auto m = VerifyCheckpoint(path);
    if (!m.ok()) return m.status().WithContext("resume: refusing checkpoint " + path);
    if (manifest) *manifest = std::move(*m);
    return path;
  }
  auto all = ListCheckpoints(path);
  if (all.empty())
    return Status::NotFound("resume: no checkpoint (ckpt-STEP directory) in " + path);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    auto m = VerifyCheckpoint(it->second);
    if (m.ok()) {
      if (manifest) *manifest = std::move(*m);
      return it->second;
    }
    const std::string why = "refusing checkpoint " + it->second + ": " + m.status().message();
    LOG(WARNING) << "resume: " << why
                 << (std::next(it) != all.rend() ? "; trying the one before it" : "");
    if (refused) refused->push_back(why);
  }
  return Status::InvalidArgument("resume: no complete, intact checkpoint in " + path + " (" +
                                 std::to_string(all.size()) + " refused)");
}

Result<ckpt::CheckpointFile> WriteCheckpointFile(const std::string& dir, const std::string& name,
                                                 const std::string& bytes) {
  DIN_RETURN_IF_ERROR(WriteFileDurably(dir + "/" + name, bytes));
  ckpt::CheckpointFile f;
  f.set_name(name);
  f.set_bytes(bytes.size());
  f.set_xxh64(Hex(Xxh64::Of(bytes.data(), bytes.size())));
  return f;
}

Result<std::string> FinishCheckpoint(const std::string& tmp_dir,
                                     const ckpt::CheckpointManifest& manifest, uint32_t keep) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(manifest, &text))
    return Status::Internal("cannot format the checkpoint manifest");
  DIN_RETURN_IF_ERROR(WriteFileDurably(tmp_dir + "/" + kCheckpointManifestName, text));
  DIN_RETURN_IF_ERROR(WriteFileDurably(tmp_dir + "/" + kSuccessName, ""));
  const fs::path tmp(tmp_dir);
  const fs::path root = tmp.parent_path();
  const fs::path final_path = root / CheckpointName(manifest.step());
  std::error_code ec;
  // A checkpoint of the same step (a run resumed from an older one and stopped at the
  // same step again) is replaced: move it aside first, so a crash never leaves none.
  const fs::path old = root / (CheckpointName(manifest.step()) + ".old");
  if (fs::exists(final_path, ec)) {
    fs::remove_all(old, ec);
    fs::rename(final_path, old, ec);
    if (ec)
      return Status::IoError("cannot move " + final_path.string() + " aside: " + ec.message());
  }
  fs::rename(tmp, final_path, ec);
  if (ec)
    return Status::IoError("cannot rename " + tmp.string() + " to " + final_path.string() + ": " +
                           ec.message());
  DIN_RETURN_IF_ERROR(SyncDirectory(root.string()));
  fs::remove_all(old, ec);

  // Retention: the newest `keep` complete checkpoints stay.
  auto all = ListCheckpoints(root.string());
  std::vector<std::string> complete;
  for (const auto& [step, dir] : all)
    if (fs::exists(fs::path(dir) / kSuccessName, ec)) complete.push_back(dir);
  const size_t k = std::max<uint32_t>(keep, 1);
  for (size_t i = 0; i + k < complete.size(); ++i) {
    fs::remove_all(complete[i], ec);
    if (ec) LOG(WARNING) << "cannot delete old checkpoint " << complete[i] << ": " << ec.message();
  }
  // .tmp directories are left by writers that died; none is being written now.
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.starts_with(kPrefix) && name.ends_with(kTmpSuffix) && it->path() != tmp) {
      std::error_code ec2;
      fs::remove_all(it->path(), ec2);
    }
  }
  return final_path.string();
}

}  // namespace din
