#include "ps/dump_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <system_error>

#include "common/hash.h"

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
      const size_t job = n;
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
      // Start writing this block to the disk now, while the next ones are produced, so
      // the final fsync finds little left to do (it still waits for all of it).
      if (st.ok())
        ::sync_file_range(fd_, static_cast<off64_t>(written_), static_cast<off64_t>(job),
                          SYNC_FILE_RANGE_WRITE);
      written_ += job;
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

uint64_t DumpShardRows(const ShardStore& store, const ShardDumpSpec& spec) {
  if (!spec.delta) return store.size();
  // By row number: rows freed by eviction are not written (and their numbers may be
  // taken again by new rows, which are marked changed when created).
  uint64_t n = 0;
  for (uint64_t r = 0; r < store.end_row(); ++r)
    n += store.live(static_cast<uint32_t>(r)) && spec.Keeps(r) ? 1 : 0;
  return n;
}

Result<std::vector<ManifestFile>> DumpShard(const ShardStore& store, const ShardDumpSpec& spec) {
  DIN_RETURN_IF_ERROR(CheckDumpTableName(spec.table));
  const std::filesystem::path table_dir = std::filesystem::path(spec.dir) / spec.table;
  std::error_code ec;
  std::filesystem::create_directories(table_dir, ec);
  // Another lane may create the directory at the same moment: only its absence counts.
  if (!std::filesystem::is_directory(table_dir))
    return Status::IoError("cannot create directory " + table_dir.string() +
                           (ec ? ": " + ec.message() : ""));

  const uint64_t rows = DumpShardRows(store, spec);
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
    store.ForEachRowIndexed(
        [&](uint32_t row, uint64_t key, uint32_t, const float* w, const float*) {
          if (!spec.Keeps(row)) return;
          if (!st.ok()) return;
          st = txt.Append(line.data(), FormatTextRow(key, w, dim, line.data(), line.size()));
        });
  } else {
    DIN_RETURN_IF_ERROR(open(".ids.npy", NpyHeader("<u8", {rows})));
    DIN_RETURN_IF_ERROR(open(".emb.npy", NpyHeader("<f4", {rows, dim})));
    const bool with_counts = spec.counts || spec.state;
    if (with_counts) DIN_RETURN_IF_ERROR(open(".count.npy", NpyHeader("<u4", {rows})));
    const uint32_t state_floats = store.state_floats();
    if (spec.state) DIN_RETURN_IF_ERROR(open(".state.npy", NpyHeader("<f4", {rows, state_floats})));
    if (spec.row_numbers) DIN_RETURN_IF_ERROR(open(".rows.npy", NpyHeader("<u4", {rows})));
    if (spec.steps != nullptr) DIN_RETURN_IF_ERROR(open(".step.npy", NpyHeader("<u8", {rows})));
    DumpFileWriter& ids = *outs[0].writer;
    DumpFileWriter& emb = *outs[1].writer;
    DumpFileWriter* counts = with_counts ? outs[2].writer.get() : nullptr;
    DumpFileWriter* state = spec.state ? outs[2 + with_counts].writer.get() : nullptr;
    DumpFileWriter* numbers =
        spec.row_numbers ? outs[2 + with_counts + spec.state].writer.get() : nullptr;
    DumpFileWriter* steps = spec.steps != nullptr ? outs.back().writer.get() : nullptr;
    const size_t row_bytes = size_t{dim} * sizeof(float);
    const size_t state_bytes = size_t{state_floats} * sizeof(float);
    // After a failure the buffers stay full, so every TryAppend fails and the rest of
    // the pass costs little.
    auto put = [&st](DumpFileWriter& f, const void* data, size_t n) {
      if (!f.TryAppend(data, n) && st.ok()) st = f.Append(data, n);
    };
    store.ForEachRowIndexed(
        [&](uint32_t row, uint64_t key, uint32_t count, const float* w, const float* s) {
          if (!spec.Keeps(row)) return;
          put(ids, &key, sizeof(key));
          put(emb, w, row_bytes);
          if (counts != nullptr) put(*counts, &count, sizeof(count));
          if (state != nullptr && state_bytes > 0) put(*state, s, state_bytes);
          if (numbers != nullptr) put(*numbers, &row, sizeof(row));
          if (steps != nullptr) {
            const uint64_t step = row < spec.steps->size() ? (*spec.steps)[row] : UINT64_MAX;
            put(*steps, &step, sizeof(step));
          }
        });
    if (st.ok() && spec.removed != nullptr) {
      const std::vector<uint64_t>& removed = *spec.removed;
      st = open(".removed.npy", NpyHeader("<u8", {removed.size()}));
      if (st.ok())
        st = outs.back().writer->Append(removed.data(), removed.size() * sizeof(uint64_t));
    }
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

namespace {

// One .npy file of a checkpoint part, read front to back in pieces while its XXH64 is
// computed, so that a part is never held whole in memory.
class VerifiedNpyStream {
 public:
  ~VerifiedNpyStream() {
    if (f_ != nullptr) std::fclose(f_);
  }
  // Opens dir/file, reads and hashes its header and checks type and shape.
  Status Open(const std::string& dir, const ManifestFile& file, const char* descr,
              const std::vector<uint64_t>& shape) {
    file_ = &file;
    path_ = dir + "/" + file.name;
    f_ = std::fopen(path_.c_str(), "rb");
    if (f_ == nullptr) return Status::IoError(Errno("cannot open", path_));
#ifdef POSIX_FADV_SEQUENTIAL
    ::posix_fadvise(::fileno(f_), 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    DIN_ASSIGN_OR_RETURN(NpyInfo info, ReadNpyHeader(f_, path_));
    if (info.descr != descr || info.shape != shape ||
        info.header_bytes + info.elements() * info.item_bytes() != file.bytes)
      return Status::InvalidArgument(path_ + ": unexpected type or shape");
    std::string head(info.header_bytes, '\0');
    if (std::fseek(f_, 0, SEEK_SET) != 0 ||
        std::fread(head.data(), 1, head.size(), f_) != head.size())
      return Status::InvalidArgument(path_ + ": truncated .npy header");
    hash_.Update(head.data(), head.size());
    read_ = head.size();
    return Status::Ok();
  }
  // Reads the next `n` bytes of array data into `out`.
  Status Read(size_t n, std::vector<char>* out) {
    out->resize(n);
    if (n == 0) return Status::Ok();
    if (std::fread(out->data(), 1, n, f_) != n)
      return Status::InvalidArgument(path_ + ": " + std::to_string(read_) +
                                     "+ bytes, the MANIFEST says " + std::to_string(file_->bytes) +
                                     " (truncated)");
    hash_.Update(out->data(), n);
    read_ += n;
    return Status::Ok();
  }
  // After the last Read: nothing follows, and the checksum is the MANIFEST's.
  Status Finish() {
    char extra;
    if (std::fread(&extra, 1, 1, f_) != 0 || read_ != file_->bytes)
      return Status::InvalidArgument(path_ + ": longer than the " + std::to_string(file_->bytes) +
                                     " bytes the MANIFEST says");
    if (std::ferror(f_) != 0) return Status::IoError("cannot read " + path_);
    if (hash_.Digest() != file_->xxh64)
      return Status::InvalidArgument(path_ +
                                     ": checksum mismatch (XXH64 differs from the MANIFEST)");
    return Status::Ok();
  }

 private:
  const ManifestFile* file_ = nullptr;
  std::string path_;
  std::FILE* f_ = nullptr;
  Xxh64 hash_;
  uint64_t read_ = 0;
};

// Rows streamed per piece of a part: a few MiB of buffers whatever the part's size.
constexpr uint64_t kLoadRowsPerPiece = 16384;

}  // namespace

Result<uint32_t> LoadCheckpointRow(ShardStore* store, uint64_t key, const char* weights,
                                   const char* state, uint32_t count) {
  bool inserted = false;
  DIN_ASSIGN_OR_RETURN(const uint32_t row, store->FindOrInsert(key, &inserted));
  // Float32 weights, exact for any storage the checkpoint was written from: a store of
  // the same format gets its bits back (docs/design.md §13).
  thread_local std::vector<float> w;
  w.resize(store->dim());
  std::memcpy(w.data(), weights, w.size() * sizeof(float));
  store->SetWeights(row, w.data());
  if (store->state_floats() > 0)
    std::memcpy(store->State(row), state, size_t{store->state_floats()} * sizeof(float));
  store->SetCount(row, count);
  return row;
}

Result<ManifestFile> WriteNpyFile(const std::string& dir, const std::string& name,
                                  const std::string& descr, const std::vector<uint64_t>& shape,
                                  const void* data, size_t bytes) {
  DIN_ASSIGN_OR_RETURN(auto writer,
                       DumpFileWriter::Create((std::filesystem::path(dir) / name).string()));
  const std::string header = NpyHeader(descr, shape);
  DIN_RETURN_IF_ERROR(writer->Append(header.data(), header.size()));
  DIN_RETURN_IF_ERROR(writer->Append(data, bytes));
  DIN_RETURN_IF_ERROR(writer->Close());
  DIN_RETURN_IF_ERROR(SyncDirectory((std::filesystem::path(dir) / name).parent_path().string()));
  return ManifestFile{name, writer->bytes(), writer->xxh64()};
}

Result<uint64_t> LoadCheckpointPart(const std::string& dir, const ManifestTable& table,
                                    const ManifestPart& part,
                                    const std::vector<ShardStore*>& stores, uint32_t min_count,
                                    std::vector<std::vector<uint64_t>>* steps) {
  if (!table.checkpoint())
    return Status::InvalidArgument(dir + ": table " + table.name +
                                   " has no optimizer state (a dump, not a checkpoint)");
  for (const ShardStore* store : stores) {
    if (store == nullptr) continue;
    if (store->dim() != table.dim || store->state_floats() != table.state_floats)
      return Status::InvalidArgument(
          dir + ": table " + table.name + " has dim " + std::to_string(table.dim) + " and " +
          std::to_string(table.state_floats) + " optimizer state floats, the config " +
          std::to_string(store->dim()) + " and " + std::to_string(store->state_floats()));
  }
  const std::string stem = table.name + "/" + DumpPartStem(part.shard, table.shards);
  struct Array {
    const char* suffix;
    const char* descr;
    uint64_t cols;  // 0: one-dimensional
    VerifiedNpyStream stream;
    std::vector<char> piece;
  };
  Array arrays[5] = {{".ids.npy", "<u8", 0, {}, {}},
                     {".emb.npy", "<f4", table.dim, {}, {}},
                     {".state.npy", "<f4", table.state_floats, {}, {}},
                     {".count.npy", "<u4", 0, {}, {}},
                     {".step.npy", "<u8", 0, {}, {}}};
  // The last-push steps are optional (tables with ttl_steps have them).
  int n_arrays = 4;
  for (const ManifestFile& f : part.files)
    if (steps != nullptr && f.name == stem + ".step.npy") n_arrays = 5;
  for (int k = 0; k < n_arrays; ++k) {
    Array& a = arrays[k];
    const std::string name = stem + a.suffix;
    const ManifestFile* file = nullptr;
    for (const ManifestFile& f : part.files)
      if (f.name == name) file = &f;
    if (file == nullptr)
      return Status::InvalidArgument(dir + "/" + kManifestName + ": part lists no " + name);
    const std::vector<uint64_t> want_shape = a.cols > 0 || std::string(a.suffix) == ".state.npy"
                                                 ? std::vector<uint64_t>{part.rows, a.cols}
                                                 : std::vector<uint64_t>{part.rows};
    DIN_RETURN_IF_ERROR(a.stream.Open(dir, *file, a.descr, want_shape));
  }
  const uint32_t shards = static_cast<uint32_t>(stores.size());
  const size_t item_bytes[5] = {sizeof(uint64_t), size_t{table.dim} * sizeof(float),
                                size_t{table.state_floats} * sizeof(float), sizeof(uint32_t),
                                sizeof(uint64_t)};
  uint64_t loaded = 0;
  for (uint64_t begin = 0; begin < part.rows; begin += kLoadRowsPerPiece) {
    const uint64_t n = std::min(kLoadRowsPerPiece, part.rows - begin);
    for (int k = 0; k < n_arrays; ++k)
      DIN_RETURN_IF_ERROR(arrays[k].stream.Read(n * item_bytes[k], &arrays[k].piece));
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t key;
      std::memcpy(&key, arrays[0].piece.data() + i * item_bytes[0], sizeof(key));
      ShardStore* store = stores[ShardOf(key, shards)];
      if (store == nullptr) continue;
      uint32_t count;
      std::memcpy(&count, arrays[3].piece.data() + i * item_bytes[3], sizeof(count));
      if (count < min_count) continue;  // not admitted
      DIN_ASSIGN_OR_RETURN(const uint32_t row,
                           LoadCheckpointRow(store, key, arrays[1].piece.data() + i * item_bytes[1],
                                             arrays[2].piece.data() + i * item_bytes[2], count));
      if (n_arrays == 5) {
        std::vector<uint64_t>& last = (*steps)[ShardOf(key, shards)];
        if (last.size() <= row) last.resize(size_t{row} + 1, UINT64_MAX);
        std::memcpy(&last[row], arrays[4].piece.data() + i * item_bytes[4], sizeof(uint64_t));
      }
      ++loaded;
    }
  }
  for (int k = 0; k < n_arrays; ++k) DIN_RETURN_IF_ERROR(arrays[k].stream.Finish());
  return loaded;
}

}  // namespace din
