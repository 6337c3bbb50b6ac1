// TsvWriter: a buffered writer of text lines, for din-tsv (DESIGN §5) and the tools' other
// line-per-record outputs. Lines are built in a 1 MiB buffer and written when it fills
// and on Close(); the first write error is kept and returned by Close().
#pragma once

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace din {

class TsvWriter {
 public:
  static constexpr size_t kBufferBytes = 1 << 20;

  TsvWriter() = default;
  TsvWriter(const TsvWriter&) = delete;
  TsvWriter& operator=(const TsvWriter&) = delete;
  // Closes the file if Close() was not called; its errors are then lost.
  ~TsvWriter() { (void)Close(); }

  // Creates (truncates) `path`. A writer that is still open is closed first (call
  // Close() before to see its errors).
  Status Open(const std::string& path) {
    (void)Close();
    path_ = path;
    status_ = Status::Ok();
    lines_ = 0;
    f_ = std::fopen(path.c_str(), "wb");
    if (!f_) return Status::IoError("cannot create " + path + ": " + std::strerror(errno));
    buf_.reserve(kBufferBytes + 4096);
    return Status::Ok();
  }

  // Appends to the current line.
  void Num(uint64_t v) {
    char tmp[24];
    buf_.append(tmp, std::to_chars(tmp, tmp + sizeof(tmp), v).ptr);
  }
  void Char(char c) { buf_.push_back(c); }
  void Text(std::string_view s) { buf_.append(s); }
  // Values separated by ',' (nothing for an empty list).
  void NumList(std::span<const uint64_t> values) {
    for (size_t i = 0; i < values.size(); ++i) {
      if (i) buf_.push_back(',');
      Num(values[i]);
    }
  }
  // Ends the line ('\n').
  void EndLine() {
    buf_.push_back('\n');
    ++lines_;
    if (buf_.size() >= kBufferBytes) Flush();
  }

  // One din-tsv line: label, user, item, category, the behaviour items and their
  // categories (two comma-separated lists of equal length).
  void DinTsvRow(uint64_t label, uint64_t user, uint64_t item, uint64_t cate,
                 std::span<const uint64_t> hist_items, std::span<const uint64_t> hist_cates) {
    Num(label);
    Char('\t');
    Num(user);
    Char('\t');
    Num(item);
    Char('\t');
    Num(cate);
    Char('\t');
    NumList(hist_items);
    Char('\t');
    NumList(hist_cates);
    EndLine();
  }

  // Writes what is buffered and closes the file: OK, or the first error since Open().
  // Closing a writer that is not open is OK.
  Status Close() {
    if (!f_) return Status::Ok();
    Flush();
    if (std::fclose(f_) != 0 && status_.ok())
      status_ = Status::IoError("cannot write " + path_ + ": " + std::strerror(errno));
    f_ = nullptr;
    buf_.clear();
    return status_;
  }

  uint64_t lines() const { return lines_; }
  const std::string& path() const { return path_; }

 private:
  void Flush() {
    if (status_.ok() && std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
      status_ = Status::IoError("cannot write " + path_ + ": " + std::strerror(errno));
    buf_.clear();
  }

  std::string path_;
  FILE* f_ = nullptr;
  std::string buf_;
  uint64_t lines_ = 0;
  Status status_;
};

}  // namespace din
