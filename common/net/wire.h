// Helpers for the frames of common/proto/wire.proto: Protobuf header frames, raw
// little-endian array frames, and the one mapping between Status (common/status.h) and
// the error codes of a reply.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <google/protobuf/message_lite.h>
#include <zmq.hpp>

#include "common/half.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"

namespace din {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian and read in place");

inline zmq::message_t EncodeFrame(const google::protobuf::MessageLite& m) {
  zmq::message_t msg(m.ByteSizeLong());
  m.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(msg.data()));
  return msg;
}

inline bool DecodeFrame(const zmq::message_t& msg, google::protobuf::MessageLite* m) {
  return m->ParseFromArray(msg.data(), static_cast<int>(msg.size()));
}

// The frame as an array of T. The frame's size must be a multiple of sizeof(T) (the
// caller validates sizes first). Frames are read in place when suitably aligned
// (always, in practice, for large frames) and copied into `scratch` otherwise.
template <typename T>
std::span<const T> FrameAs(const zmq::message_t& msg, std::vector<T>* scratch) {
  const size_t n = msg.size() / sizeof(T);
  if (reinterpret_cast<uintptr_t>(msg.data()) % alignof(T) == 0)
    return {static_cast<const T*>(msg.data()), n};
  scratch->resize(n);
  std::memcpy(scratch->data(), msg.data(), n * sizeof(T));
  return {scratch->data(), n};
}

// A frame of n Ts to be filled in place. zmq allocates large messages with malloc, so the
// data is aligned; small (inline) messages are checked and filled through a copy.
template <typename T>
zmq::message_t ArrayFrame(std::span<const T> values) {
  zmq::message_t msg(values.size_bytes());
  if (!values.empty()) std::memcpy(msg.data(), values.data(), values.size_bytes());
  return msg;
}

// memcpy of one row, with the row sizes of common dims (4 to 256 bytes) as constants so
// that the copy is inlined (a per-row call to memcpy dominates a scatter of small rows).
inline void CopyRow(void* dst, const void* src, size_t bytes) {
  switch (bytes) {
    case 4:
      std::memcpy(dst, src, 4);
      return;
    case 16:
      std::memcpy(dst, src, 16);
      return;
    case 32:
      std::memcpy(dst, src, 32);
      return;
    case 64:
      std::memcpy(dst, src, 64);
      return;
    case 128:
      std::memcpy(dst, src, 128);
      return;
    case 256:
      std::memcpy(dst, src, 256);
      return;
    default:
      std::memcpy(dst, src, bytes);
  }
}

// Reusable memory for large outgoing frames. Get() returns a message whose bytes live in
// a block of the pool; ZeroMQ hands the block back (zmq_msg_init_data's free function,
// called from whichever thread releases the message) once it has written the frame out,
// and the next Get() of a size that fits reuses it. A large frame thus costs no
// allocation and, above all, no fresh pages (a fresh multi-megabyte malloc is an mmap
// whose every page the kernel clears on first touch). Small frames (under kMinBytes) are
// ordinary ZeroMQ messages. Blocks keep the pool alive: messages may outlive the owner's
// handle. At most `max_cached_bytes` of idle blocks are kept; the rest are freed.
// Thread-safe.
class FramePool : public std::enable_shared_from_this<FramePool> {
 public:
  static constexpr size_t kMinBytes = 64 << 10;
  static std::shared_ptr<FramePool> Create(size_t max_cached_bytes = size_t{512} << 20);
  zmq::message_t Get(size_t bytes);
  // Idle blocks held (for tests).
  size_t idle_blocks() const;

 private:
  struct Block;
  explicit FramePool(size_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  static void Release(void* data, void* hint);
  const size_t max_cached_;
  mutable std::mutex mu_;
  std::vector<Block*> idle_;
  size_t idle_bytes_ = 0;

 public:
  ~FramePool();
};

// ---- The half-precision wire (wire.proto Precision, docs/design.md §4). A Precision
// value and the WeightFormat of the same name have the same number.
static_assert(static_cast<int>(WeightFormat::kFp16) == wire::FP16 &&
              static_cast<int>(WeightFormat::kBf16) == wire::BF16 &&
              static_cast<int>(WeightFormat::kFp32) == wire::FP32);

// The largest |grad_scale_exp| a request may carry.
constexpr int kMaxGradScaleExp = 120;

// Checks the precision fields of a request: a known Precision; FP16/BF16 only on PULL
// and PUSH; grad_scale_exp only on an FP16 PUSH, within kMaxGradScaleExp. The error
// (kInvalidArgument) names the value and the op.
Status CheckRequestPrecision(const wire::RequestHeader& h);
// The element type of a request's float frames (the request passed CheckRequestPrecision).
inline WeightFormat RequestPrecision(const wire::RequestHeader& h) {
  return static_cast<WeightFormat>(h.precision());
}
// The name of a Precision value ("FP16"; "precision 7" for one this build does not know).
std::string PrecisionName(uint32_t precision);

// The exponent s of the power of two by which FP16 gradients are multiplied before
// rounding, given the largest |g| of the request: the largest g maps into [2^14, 2^15)
// (far from fp16's overflow at 65520, and small gradients move up out of the
// subnormals). 0 when max_abs is 0 or not finite (an infinite or NaN gradient stays so).
int Fp16GradScaleExp(float max_abs);

// A PUSH's gradient frame as float32: read in place when it is float32 (FrameAs), else
// widened into *scratch and multiplied by 2^-grad_scale_exp. The frame's size was
// validated against the request's precision.
std::span<const float> GradientFloats(const wire::RequestHeader& h, const zmq::message_t& frame,
                                      std::vector<float>* scratch);

// ---- Status <-> wire::Code. Each StatusCode has its own wire code (kInvalidArgument is
// INVALID_REQUEST, every other one the code of the same name), so a reply carries the
// code and message of the server's Status unchanged to the client.

wire::Code ToWireCode(StatusCode code);
// The StatusCode of a wire code; a value this build does not know (a newer peer's) is
// kInternal.
StatusCode FromWireCode(int code);
// Sets the code and error of `rh` from `status` (clears them when it is OK).
void SetReplyStatus(const Status& status, wire::ReplyHeader* rh);
// The Status a reply carries: its code with its error as the message. A code this build
// does not know (Protobuf keeps it among the unknown fields and reads code() as OK) is
// kInternal, naming the code.
Status ReplyStatus(const wire::ReplyHeader& rh);

}  // namespace din
