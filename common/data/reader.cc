#include "common/data/reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "common/hash.h"
#include "common/rng.h"

namespace din {
namespace {

constexpr size_t kMinBufferBytes = 4u << 20;
constexpr size_t kKeptBadMessages = 10;

std::string ErrnoText() { return std::strerror(errno); }

// pread that retries on EINTR and short reads until `n` bytes or end of file.
Result<size_t> PreadFull(int fd, char* buf, size_t n, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(path + ": read failed: " + ErrnoText());
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Result<Fd> OpenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(path + ": cannot open: " + ErrnoText());
  return Fd(fd);
}

}  // namespace

// Sequential reader of the lines whose first byte lies in [begin, end) of one file.
// Owns a buffer that it reuses across Open calls: `buffer_bytes` at first, grown (by
// doubling, up to max_line_bytes + 2) only when a line does not fit in it.
class LineSource {
 public:
  LineSource(size_t max_line_bytes, size_t buffer_bytes)
      : max_line_(max_line_bytes), buf_(std::max<size_t>(buffer_bytes, 64)) {}

  // Without `resume`, starts at the first line start >= begin; with it, at *resume
  // (which must be a line start).
  Status Open(const std::string& path, uint64_t begin, uint64_t end, const uint64_t* resume) {
    fd_.Reset();
    DIN_ASSIGN_OR_RETURN(fd_, OpenFile(path));
    path_ = path;
    end_ = end;
    pos_ = len_ = 0;
    eof_ = false;
    if (resume) {
      buf_off_ = *resume;
      return Status::Ok();
    }
    if (begin == 0) {
      buf_off_ = 0;
      return Status::Ok();
    }
    // The line containing byte begin-1 belongs to the previous range: skip through its
    // '\n' (when byte begin-1 is itself '\n', the line at `begin` is the first one).
    buf_off_ = begin - 1;
    for (;;) {
      DIN_RETURN_IF_ERROR(Fill());
      const char* start = buf_.data() + pos_;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', len_ - pos_));
      if (nl) {
        pos_ += static_cast<size_t>(nl - start) + 1;
        return Status::Ok();
      }
      pos_ = len_;
      if (eof_) return Status::Ok();
    }
  }

  // The next line; false at the end of the range. `text` excludes the '\n' (a '\r'
  // before it is kept; the parser drops it) and stays valid until the next call. A
  // too-long line is skipped whole and reported with `too_long` (text then empty).
  Result<bool> Next(std::string_view* text, uint64_t* offset, bool* too_long) {
    for (;;) {
      if (buf_off_ + pos_ >= end_) return false;
      char* start = buf_.data() + pos_;
      const size_t avail = len_ - pos_;
      const char* nl = static_cast<const char*>(std::memchr(start, '\n', avail));
      if (nl || (eof_ && avail > 0)) {
        const size_t n = nl ? static_cast<size_t>(nl - start) : avail;
        *offset = buf_off_ + pos_;
        pos_ += nl ? n + 1 : n;
        const size_t content = (n > 0 && start[n - 1] == '\r') ? n - 1 : n;
        *too_long = content > max_line_;
        *text = *too_long ? std::string_view() : std::string_view(start, n);
        return true;
      }
      if (eof_) return false;
      if (avail >= buf_.size() && buf_.size() < max_line_ + 2) {
        // The buffer may be too small for a line within max_line_bytes: grow it.
        buf_.resize(std::min(buf_.size() * 2, max_line_ + 2));
        continue;
      }
      if (avail >= buf_.size()) {
        // No line break within the whole buffer: too long. Skip to the next '\n'.
        *offset = buf_off_ + pos_;
        *too_long = true;
        *text = std::string_view();
        pos_ = len_;
        for (;;) {
          DIN_RETURN_IF_ERROR(Fill());
          const char* s = buf_.data() + pos_;
          const char* q = static_cast<const char*>(std::memchr(s, '\n', len_ - pos_));
          if (q) {
            pos_ += static_cast<size_t>(q - s) + 1;
            break;
          }
          pos_ = len_;
          if (eof_) break;
        }
        return true;
      }
      DIN_RETURN_IF_ERROR(Fill());
    }
  }

  uint64_t next_offset() const { return buf_off_ + pos_; }

 private:
  // Moves the unread bytes to the front and reads more after them.
  Status Fill() {
    if (pos_ > 0) {
      std::memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
      buf_off_ += pos_;
      len_ -= pos_;
      pos_ = 0;
    }
    if (len_ == buf_.size()) return Status::Ok();
    DIN_ASSIGN_OR_RETURN(size_t n, PreadFull(fd_.get(), buf_.data() + len_, buf_.size() - len_,
                                             buf_off_ + len_, path_));
    if (n == 0) eof_ = true;
    len_ += n;
    return Status::Ok();
  }

  const size_t max_line_;
  std::vector<char> buf_;
  Fd fd_;
  std::string path_;
  uint64_t end_ = 0;
  uint64_t buf_off_ = 0;  // file offset of buf_[0]
  size_t pos_ = 0;        // first unread byte in buf_
  size_t len_ = 0;        // bytes held in buf_
  bool eof_ = false;
};

namespace {

// ValidateDataConfig without the schema, which Open builds (once) after it.
Status ValidateReadingOptions(const config::DataConfig& cfg) {
  if (cfg.batch_size() == 0) return Status::InvalidArgument("data: batch_size must be > 0");
  if (cfg.partitions() > cfg.batch_size())
    return Status::InvalidArgument(
        "data: partitions (" + std::to_string(cfg.partitions()) + ") must be at most batch_size (" +
        std::to_string(cfg.batch_size()) + "): every partition contributes to every step");
  if (cfg.partitions() > (1u << 16))
    return Status::InvalidArgument("data: partitions must be at most 65536");
  if (cfg.shuffle_buffer() > (1u << 24))
    return Status::InvalidArgument("data: shuffle_buffer must be at most 16777216");
  if (cfg.max_line_bytes() == 0 || cfg.max_line_bytes() > (1u << 30))
    return Status::InvalidArgument("data: max_line_bytes must be in 1..1073741824");
  return Status::Ok();
}

}  // namespace

Status ValidateDataConfig(const config::DataConfig& cfg) {
  DIN_RETURN_IF_ERROR(ValidateReadingOptions(cfg));
  return Schema::FromConfig(cfg).status();
}

Result<std::unique_ptr<Reader>> Reader::Open(const config::DataConfig& cfg, Options options) {
  if (options.workers < 1 || options.worker < 0 || options.worker >= options.workers)
    return Status::InvalidArgument("reader: worker " + std::to_string(options.worker) + " of " +
                                   std::to_string(options.workers) + " is invalid");
  DIN_RETURN_IF_ERROR(ValidateReadingOptions(cfg));
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg));
  if (options.path.empty()) return Status::InvalidArgument("data: no input path given");
  DIN_ASSIGN_OR_RETURN(std::vector<InputFile> files, ListInputFiles(options.path));
  std::vector<Segment> segments = PartitionInput(files, options.worker, options.workers);
  const size_t shuffle = options.shuffle && cfg.shuffle_buffer() > 1 ? cfg.shuffle_buffer() : 0;
  // No line is longer than the largest file: a smaller input gets a smaller buffer.
  uint64_t largest = 0;
  for (const InputFile& f : files) largest = std::max(largest, f.size);
  const size_t buffer = static_cast<size_t>(
      std::min<uint64_t>(std::max(kMinBufferBytes, cfg.max_line_bytes() + size_t{2}), largest + 2));
  return std::unique_ptr<Reader>(new Reader(
      cfg, std::move(schema), std::make_shared<const std::vector<InputFile>>(std::move(files)),
      std::move(segments), std::move(options), shuffle, buffer));
}

Result<std::unique_ptr<Reader>> Reader::OpenPartition(const config::DataConfig& cfg,
                                                      PartitionOptions options) {
  if (options.parts < 1 || options.part < 0 || options.part >= options.parts)
    return Status::InvalidArgument("reader: partition " + std::to_string(options.part) + " of " +
                                   std::to_string(options.parts) + " is invalid");
  if (!options.files || options.files->empty())
    return Status::InvalidArgument("reader: no input files given");
  DIN_RETURN_IF_ERROR(ValidateReadingOptions(cfg));
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg));
  std::vector<Segment> segments = PartitionByteRanges(*options.files, options.part, options.parts);
  const size_t shuffle = options.shuffle_buffer > 1 ? options.shuffle_buffer : 0;
  return std::unique_ptr<Reader>(new Reader(
      cfg, std::move(schema), std::move(options.files), std::move(segments),
      Options{"", options.part, options.parts, shuffle > 0}, shuffle, options.read_buffer_bytes));
}

Result<std::unique_ptr<Reader>> Reader::OpenTrain(const config::DataConfig& cfg, int worker,
                                                  int workers) {
  return Open(cfg, {cfg.train_path(), worker, workers, true});
}

Result<std::unique_ptr<Reader>> Reader::OpenTest(const config::DataConfig& cfg, int worker,
                                                 int workers) {
  return Open(cfg, {cfg.test_path(), worker, workers, false});
}

Reader::Reader(const config::DataConfig& cfg, Schema schema,
               std::shared_ptr<const std::vector<InputFile>> files, std::vector<Segment> segments,
               Options options, size_t shuffle_capacity, size_t read_buffer_bytes)
    : cfg_(cfg),
      schema_(std::move(schema)),
      parser_(&schema_, cfg.max_history()),
      files_(std::move(files)),
      segments_(std::move(segments)),
      options_(std::move(options)),
      shuffle_capacity_(shuffle_capacity),
      source_(std::make_unique<LineSource>(cfg.max_line_bytes(), read_buffer_bytes)) {
  schema_.PrepareBatch(&pool_);
  ResetEpochOrder();
}

Reader::~Reader() {
  if (line_fd_ >= 0) ::close(line_fd_);
}

void Reader::ResetEpochOrder() {
  rng_ = SplitMix64(
      Mix64(cfg_.seed() ^ Mix64(0x5eedULL + epoch_ * 0x10001ULL +
                                static_cast<uint64_t>(options_.worker) * 0x100000001ULL)));
  order_.resize(segments_.size());
  std::iota(order_.begin(), order_.end(), 0u);
  if (shuffle_capacity_ > 0) Shuffle(order_.begin(), order_.end(), rng_);
  position_ = 0;
  source_open_ = false;
  pool_.Clear();
  perm_.clear();
  emitted_ = 0;
  samples_in_epoch_ = 0;
}

void Reader::StartNextEpoch() {
  ++epoch_;
  ResetEpochOrder();
}

Status Reader::OpenSegment(uint32_t position, const uint64_t* resume_offset) {
  const Segment& seg = segments_[order_[position]];
  DIN_RETURN_IF_ERROR(source_->Open((*files_)[seg.file].path, seg.begin, seg.end, resume_offset));
  source_open_ = true;
  return Status::Ok();
}

Result<bool> Reader::NextLine(RawLine* line) {
  for (;;) {
    if (!source_open_) {
      if (position_ >= order_.size()) return false;
      DIN_RETURN_IF_ERROR(OpenSegment(position_, nullptr));
    }
    DIN_ASSIGN_OR_RETURN(bool got, source_->Next(&line->text, &line->offset, &line->too_long));
    if (!got) {
      source_open_ = false;
      ++position_;
      continue;
    }
    if (!line->too_long && (line->text.empty() || line->text == "\r")) continue;  // blank
    line->segment = order_[position_];
    return true;
  }
}

Result<uint64_t> Reader::LineNumberAt(uint32_t file, uint64_t offset) {
  // Sized on first use: StepReader's partition readers share a long file list.
  if (line_cache_.empty()) line_cache_.resize(files_->size());
  LineCount& cache = line_cache_[file];
  if (offset < cache.offset) cache = LineCount{};
  if (line_fd_file_ != file) {
    if (line_fd_ >= 0) ::close(line_fd_);
    line_fd_ = -1;
    line_fd_file_ = UINT32_MAX;
    DIN_ASSIGN_OR_RETURN(Fd fd, OpenFile((*files_)[file].path));
    line_fd_ = fd.Release();
    line_fd_file_ = file;
  }
  uint64_t at = cache.offset, newlines = cache.newlines;
  // At most 1 MiB at a time, and no more than the bytes to count (a bad line near the
  // start of a small file costs a small buffer, not a zero-filled megabyte).
  std::vector<char> chunk(static_cast<size_t>(std::clamp<uint64_t>(offset - at, 1, 1 << 20)));
  while (at < offset) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chunk.size(), offset - at));
    DIN_ASSIGN_OR_RETURN(size_t n,
                         PreadFull(line_fd_, chunk.data(), want, at, (*files_)[file].path));
    if (n == 0) break;
    newlines += static_cast<uint64_t>(std::count(chunk.data(), chunk.data() + n, '\n'));
    at += n;
  }
  cache = {at, newlines};
  return newlines + 1;
}

Status Reader::Consume(std::string_view text, uint32_t segment, uint64_t offset, bool too_long,
                       Batch* batch) {
  Status st = too_long ? Status::InvalidArgument("line longer than max_line_bytes (" +
                                                 std::to_string(cfg_.max_line_bytes()) + ")")
                       : parser_.Append(text, batch);
  if (st.ok()) return st;
  ++bad_lines_;
  const bool fatal = bad_lines_ > cfg_.max_bad_lines();
  if (!fatal && bad_messages_.size() >= kKeptBadMessages) return Status::Ok();
  // The line number costs a scan of the file up to the line: only for messages shown.
  const uint32_t file = segments_[segment].file;
  Result<uint64_t> line_no = LineNumberAt(file, offset);
  std::string msg = (*files_)[file].path + ":" +
                    (line_no.ok() ? std::to_string(*line_no) : "byte " + std::to_string(offset)) +
                    ": " + st.message();
  if (fatal) {
    if (cfg_.max_bad_lines() > 0)
      msg +=
          " (more than max_bad_lines=" + std::to_string(cfg_.max_bad_lines()) + " malformed lines)";
    return Status::InvalidArgument(msg);
  }
  // A LogMessage costs its timestamp even when warnings are filtered out.
  if (FLAGS_minloglevel <= google::GLOG_WARNING) LOG(WARNING) << "skipping malformed line: " << msg;
  bad_messages_.push_back(std::move(msg));
  return Status::Ok();
}

Status Reader::FillBlock() {
  block_ = {position_,    source_open_, source_open_ ? source_->next_offset() : 0,
            rng_.state(), bad_lines_,   samples_in_epoch_};
  pool_.Clear();
  RawLine line;
  while (pool_.size < shuffle_capacity_) {
    DIN_ASSIGN_OR_RETURN(bool got, NextLine(&line));
    if (!got) break;
    DIN_RETURN_IF_ERROR(Consume(line.text, line.segment, line.offset, line.too_long, &pool_));
  }
  perm_.resize(pool_.size);
  std::iota(perm_.begin(), perm_.end(), 0u);
  Shuffle(perm_.begin(), perm_.end(), rng_);
  emitted_ = 0;
  return Status::Ok();
}

Result<bool> Reader::NextBatch(Batch* batch) {
  schema_.PrepareBatch(batch);
  DIN_ASSIGN_OR_RETURN(size_t n, NextSamples(batch, cfg_.batch_size()));
  return n > 0;
}

Result<size_t> Reader::NextSamples(Batch* batch, size_t max_samples) {
  const size_t start = batch->size, want = start + max_samples;
  if (shuffle_capacity_ == 0) {
    RawLine line;
    while (batch->size < want) {
      DIN_ASSIGN_OR_RETURN(bool got, NextLine(&line));
      if (!got) break;
      DIN_RETURN_IF_ERROR(Consume(line.text, line.segment, line.offset, line.too_long, batch));
    }
    samples_in_epoch_ += batch->size - start;
    return batch->size - start;
  }
  while (batch->size < want) {
    if (emitted_ == perm_.size()) {
      DIN_RETURN_IF_ERROR(FillBlock());
      if (perm_.empty()) break;
    }
    batch->AppendSample(pool_, perm_[emitted_++]);
    // Counted per sample so that a block filled mid-call records the exact count.
    ++samples_in_epoch_;
  }
  return batch->size - start;
}

uint64_t Reader::Fingerprint() const {
  uint64_t h = Mix64(0xd17a5eedULL ^ cfg_.seed());
  for (const auto& f : *files_) h = Mix64(h ^ HashToken(f.path)) + f.size;
  for (const auto& s : segments_) h = Mix64(h ^ Mix64(s.file + 1)) + s.begin * 3 + s.end * 7;
  h = Mix64(h ^ shuffle_capacity_) + static_cast<uint64_t>(options_.worker);
  h = Mix64(h ^ static_cast<uint64_t>(options_.workers)) + cfg_.max_line_bytes();
  return Mix64(h);
}

std::string Reader::SaveState() const {
  config::ReaderState s;
  s.set_fingerprint(Fingerprint());
  s.set_epoch(epoch_);
  if (emitted_ < perm_.size()) {
    // Mid-block: the block's start, and how much of it was returned.
    s.set_segment(block_.position);
    s.set_in_segment(block_.in_segment);
    s.set_offset(block_.offset);
    s.set_rng(block_.rng);
    s.set_bad_lines(block_.bad_lines);
    s.set_samples_in_epoch(block_.samples_in_epoch + emitted_);
    s.set_in_block(true);
    s.set_block_emitted(emitted_);
  } else {
    s.set_segment(position_);
    s.set_in_segment(source_open_);
    s.set_offset(source_open_ ? source_->next_offset() : 0);
    s.set_rng(rng_.state());
    s.set_bad_lines(bad_lines_);
    s.set_samples_in_epoch(samples_in_epoch_);
  }
  return s.SerializeAsString();
}

Status Reader::RestoreState(std::string_view bytes) {
  config::ReaderState s;
  if (!s.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return Status::InvalidArgument("reader state: cannot parse");
  if (s.fingerprint() != Fingerprint())
    return Status::InvalidArgument(
        "reader state: it belongs to other input files, sizes, partition or shuffle settings");
  if (s.segment() > segments_.size() || (s.in_segment() && s.segment() == segments_.size()))
    return Status::InvalidArgument("reader state: inconsistent");
  epoch_ = s.epoch();
  ResetEpochOrder();
  position_ = s.segment();
  rng_ = SplitMix64(s.rng());
  bad_lines_ = s.bad_lines();
  if (s.in_segment()) {
    const uint64_t offset = s.offset();
    DIN_RETURN_IF_ERROR(OpenSegment(position_, &offset));
  }
  if (s.in_block()) {
    if (shuffle_capacity_ == 0) return Status::InvalidArgument("reader state: inconsistent");
    samples_in_epoch_ = s.samples_in_epoch() - s.block_emitted();
    DIN_RETURN_IF_ERROR(FillBlock());
    if (s.block_emitted() > perm_.size())
      return Status::InvalidArgument("reader state: the input changed");
    emitted_ = s.block_emitted();
  }
  samples_in_epoch_ = s.samples_in_epoch();
  return Status::Ok();
}

}  // namespace din
