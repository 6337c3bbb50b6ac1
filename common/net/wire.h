// Helpers for the frames of common/proto/wire.proto: Protobuf header frames, raw
// little-endian array frames, and the one mapping between Status (common/status.h) and
// the error codes of a reply.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <google/protobuf/message_lite.h>
#include <zmq.hpp>

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
