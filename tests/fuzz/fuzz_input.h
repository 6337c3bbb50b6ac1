// Structured choices read from a fuzz input, and the inverse (for writing seed files).
//
// A harness takes a few leading bytes as knobs (which op, which schema...) and the rest
// as payload. Multipart inputs use one framing everywhere: a count byte, then a 16-bit
// little-endian length and the bytes of every frame but the last, which takes the rest.
// Lengths past the end are clipped, so every byte string is some valid framing.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace din::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}

  // The next byte, or 0 once the input is exhausted.
  uint8_t Byte() { return pos_ < size_ ? static_cast<uint8_t>(data_[pos_++]) : 0; }
  uint16_t U16() {
    const uint16_t lo = Byte();
    return static_cast<uint16_t>(lo | (Byte() << 8));
  }
  // Up to n bytes (fewer at the end of the input).
  std::string_view Bytes(size_t n) {
    n = std::min(n, size_ - pos_);
    std::string_view out(data_ + pos_, n);
    pos_ += n;
    return out;
  }
  std::string_view Rest() { return Bytes(size_ - pos_); }

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Frame count = min_frames + (count byte mod (max_frames - min_frames + 1)).
inline std::vector<std::string> SplitFrames(FuzzInput* in, size_t min_frames, size_t max_frames) {
  const size_t n = min_frames + in->Byte() % (max_frames - min_frames + 1);
  std::vector<std::string> frames;
  for (size_t i = 0; i < n; ++i) {
    if (i + 1 < n) {
      frames.emplace_back(in->Bytes(in->U16()));
    } else {
      frames.emplace_back(in->Rest());
    }
  }
  return frames;
}

// The bytes that SplitFrames(in, min_frames, max_frames) turns back into `frames`.
inline std::string JoinFrames(const std::vector<std::string>& frames, size_t min_frames) {
  std::string out(1, static_cast<char>(frames.size() - min_frames));
  for (size_t i = 0; i < frames.size(); ++i) {
    if (i + 1 < frames.size()) {
      const size_t len = frames[i].size();
      out.push_back(static_cast<char>(len & 0xff));
      out.push_back(static_cast<char>(len >> 8));
    }
    out += frames[i];
  }
  return out;
}

}  // namespace din::fuzz
