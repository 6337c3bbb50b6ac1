#include "ps/dump_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <system_error>

namespace din {

namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

}  // namespace

// ---- DumpFileWriter ----------------------------------------------------------------

Result<std::unique_ptr<DumpFileWriter>> DumpFileWriter::Create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError(Errno("cannot create", path));
  return std::unique_ptr<DumpFileWriter>(new DumpFileWriter(path, fd));
}

DumpFileWriter::DumpFileWriter(std::string path, int fd)
    : path_(std::move(path)),
      fd_(fd),
      buffers_{std::make_unique<char[]>(kBufferBytes), std::make_unique<char[]>(kBufferBytes)},
      io_([this] { IoLoop(); }) {}

DumpFileWriter::~DumpFileWriter() {
  StopIo();
  if (fd_ >= 0) ::close(fd_);
}

void DumpFileWriter::StopIo() {
  if (!io_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  io_.join();
}

void DumpFileWriter::IoLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return job_ != nullptr || stop_; });
    if (job_ == nullptr) return;  // stopped with nothing left to write
    const char* data = job_;
    size_t n = job_bytes_;
    const bool failed = !io_error_.ok();
    lock.unlock();
    Status st;
    if (!failed) {
      hash_.Update(data, n);
      while (n > 0 && st.ok()) {
        const ssize_t w = ::write(fd_, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          st = Status::IoError(Errno("cannot write", path_));
        } else {
          data += w;
          n -= static_cast<size_t>(w);
        }
      }
    }
    lock.lock();
    if (!st.ok() && io_error_.ok()) io_error_ = st;
    job_ = nullptr;
    cv_.notify_all();
  }
}

Status DumpFileWriter::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return job_ == nullptr; });
  return io_error_;
}

Status DumpFileWriter::HandOff() {
  DIN_RETURN_IF_ERROR(WaitIdle());
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = buffers_[current_].get();
    job_bytes_ = used_;
  }
  cv_.notify_all();
  appended_ += used_;
  used_ = 0;
  current_ ^= 1;
  return Status::Ok();
}

Status DumpFileWriter::AppendSlow(const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const size_t take = std::min(n, kBufferBytes - used_);
    std::memcpy(buffers_[current_].get() + used_, p, take);
    used_ += take;
    p += take;
    n -= take;
    if (used_ == kBufferBytes) DIN_RETURN_IF_ERROR(HandOff());
  }
  return Status::Ok();
}

Status DumpFileWriter::Close() {
  if (fd_ < 0) return Status::Internal(path_ + ": closed twice");
  Status st = used_ > 0 ? HandOff() : Status::Ok();
  if (st.ok()) st = WaitIdle();
  StopIo();
  if (st.ok() && ::fsync(fd_) != 0) st = Status::IoError(Errno("cannot fsync", path_));
  if (::close(fd_) != 0 && st.ok()) st = Status::IoError(Errno("cannot close", path_));
  fd_ = -1;
  return st;
}

// ---- DumpShard ---------------------------------------------------------------------

namespace {

// One "id<TAB>v1 v2 ...\n" line; floats in the shortest form that reads back exactly.
size_t FormatTextRow(uint64_t key, const float* w, uint32_t dim, char* out, size_t cap) {
  char* p = out;
  char* end = out + cap;
  p = std::to_chars(p, end, key).ptr;
  for (uint32_t d = 0; d < dim; ++d) {
    *p++ = d == 0 ? '\t' : ' ';
    p = std::to_chars(p, end, w[d]).ptr;
  }
  *p++ = '\n';
  return static_cast<size_t>(p - out);
}

}  // namespace

Result<std::vector<ManifestFile>> DumpShard(const ShardStore& store, const ShardDumpSpec& spec) {
  DIN_RETURN_IF_ERROR(CheckDumpTableName(spec.table));
  const std::filesystem::path table_dir = std::filesystem::path(spec.dir) / spec.table;
  std::error_code ec;
  std::filesystem::create_directories(table_dir, ec);
  // Another lane may create the directory at the same moment: only its absence counts.
  if (!std::filesystem::is_directory(table_dir))
    return Status::IoError("cannot create directory " + table_dir.string() +
                           (ec ? ": " + ec.message() : ""));

  const uint64_t rows = store.size();
  const uint32_t dim = store.dim();
  const std::string stem = spec.table + "/" + DumpPartStem(spec.shard, spec.shards);
  struct Out {
    std::string name;
    std::unique_ptr<DumpFileWriter> writer;
  };
  std::vector<Out> outs;
  auto open = [&](const std::string& suffix, const std::string& header) -> Status {
    const std::string name = stem + suffix;
    DIN_ASSIGN_OR_RETURN(auto writer,
                         DumpFileWriter::Create((std::filesystem::path(spec.dir) / name).string()));
    DIN_RETURN_IF_ERROR(writer->Append(header.data(), header.size()));
    outs.push_back({name, std::move(writer)});
    return Status::Ok();
  };

  Status st;
  if (spec.text) {
    DIN_RETURN_IF_ERROR(open(".txt", ""));
    DumpFileWriter& txt = *outs[0].writer;
    // Worst case per value: 15 characters for a float, 20 for the ID, plus separators.
    std::vector<char> line(24 + size_t{dim} * 16);
    store.ForEachRow([&](uint64_t key, uint32_t, const float* w, const float*) {
      if (!st.ok()) return;
      st = txt.Append(line.data(), FormatTextRow(key, w, dim, line.data(), line.size()));
    });
  } else {
    DIN_RETURN_IF_ERROR(open(".ids.npy", NpyHeader("<u8", {rows})));
    DIN_RETURN_IF_ERROR(open(".emb.npy", NpyHeader("<f4", {rows, dim})));
    if (spec.counts) DIN_RETURN_IF_ERROR(open(".count.npy", NpyHeader("<u4", {rows})));
    DumpFileWriter& ids = *outs[0].writer;
    DumpFileWriter& emb = *outs[1].writer;
    DumpFileWriter* counts = spec.counts ? outs[2].writer.get() : nullptr;
    const size_t row_bytes = size_t{dim} * sizeof(float);
    // After a failure the buffers stay full, so every TryAppend fails and the rest of
    // the pass costs little.
    auto put = [&st](DumpFileWriter& f, const void* data, size_t n) {
      if (!f.TryAppend(data, n) && st.ok()) st = f.Append(data, n);
    };
    store.ForEachRow([&](uint64_t key, uint32_t count, const float* w, const float*) {
      put(ids, &key, sizeof(key));
      put(emb, w, row_bytes);
      if (counts != nullptr) put(*counts, &count, sizeof(count));
    });
  }
  DIN_RETURN_IF_ERROR(st);

  std::vector<ManifestFile> files;
  for (Out& out : outs) {
    DIN_RETURN_IF_ERROR(out.writer->Close());
    files.push_back({out.name, out.writer->bytes(), out.writer->xxh64()});
  }
  DIN_RETURN_IF_ERROR(SyncDirectory(table_dir.string()));
  DIN_RETURN_IF_ERROR(SyncDirectory(spec.dir));
  return files;
}

}  // namespace din
