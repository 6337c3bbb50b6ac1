#include "ps/dump_writer.h"

#include <fcntl.h>
#include <unistd.h>

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
    : path_(std::move(path)), fd_(fd), buffer_(new char[kBufferBytes]) {}

DumpFileWriter::~DumpFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status DumpFileWriter::WriteOut(const char* data, size_t n) {
  if (!error_.ok()) return error_;
  hash_.Update(data, n);
  while (n > 0) {
    const ssize_t w = ::write(fd_, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      error_ = Status::IoError(Errno("cannot write", path_));
      return error_;
    }
    data += w;
    n -= static_cast<size_t>(w);
    bytes_ += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status DumpFileWriter::AppendSlow(const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  // Fill the buffer, write it, then either write the rest directly (large appends) or
  // buffer it.
  const size_t take = kBufferBytes - used_;
  std::memcpy(buffer_.get() + used_, p, take);
  used_ = 0;
  DIN_RETURN_IF_ERROR(WriteOut(buffer_.get(), kBufferBytes));
  p += take;
  n -= take;
  if (n >= kBufferBytes) return WriteOut(p, n);
  std::memcpy(buffer_.get(), p, n);
  used_ = n;
  return Status::Ok();
}

Status DumpFileWriter::Close() {
  if (fd_ < 0) return error_.ok() ? Status::Internal(path_ + ": closed twice") : error_;
  Status st = WriteOut(buffer_.get(), used_);
  used_ = 0;
  if (st.ok() && ::fsync(fd_) != 0) st = Status::IoError(Errno("cannot fsync", path_));
  if (::close(fd_) != 0 && st.ok()) st = Status::IoError(Errno("cannot close", path_));
  fd_ = -1;
  if (!st.ok()) error_ = st;
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
    store.ForEachRow([&](uint64_t key, uint32_t count, const float* w, const float*) {
      if (!st.ok()) return;
      st = ids.Append(&key, sizeof(key));
      if (st.ok()) st = emb.Append(w, row_bytes);
      if (st.ok() && counts != nullptr) st = counts->Append(&count, sizeof(count));
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
