// Decoding a parameter server's reply to a PsClient request (common/proto/wire.proto),
// apart from any socket: PsClient::Wait passes every reply it receives through
// DecodeReplyHeader and DecodeReply, and the reply fuzzer (tests/fuzz/ps_reply_fuzz.cc)
// calls them directly.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/proto/wire.pb.h"
#include "common/status.h"

namespace din {

// The result of a pull for one table.
struct TablePull {
  std::vector<uint64_t> unique_ids;  // first-occurrence order
  std::vector<uint32_t> index;       // occurrence i -> row in unique_ids
  std::vector<float> values;         // [unique_ids.size() x dim], row-major
  std::vector<uint32_t> counts;      // n_j of each unique ID (0 when unknown)
};

// `count` keys of one (table, shard), the `entry`-th table of the request. The keys sent
// to a lane are its segments' keys, one segment after another.
struct RequestSegment {
  uint32_t entry;
  uint32_t table;
  uint32_t shard;
  uint32_t count;
};

// What one lane was sent.
struct LaneRequest {
  std::vector<RequestSegment> segments;
  // PULL: for each key sent, in send order, its row in its entry's TablePull.
  std::vector<uint32_t> items;
};

// Where the replies to one request go, from whichever lane.
struct ReplyTarget {
  wire::Op op = wire::OP_UNSPECIFIED;
  std::vector<TablePull*> outs;  // PULL, per entry: values and counts already sized
  std::vector<uint32_t> dims;    // PULL, per entry
  // PULL: the wire.proto Precision the request asked for; the reply must say the same
  // (ReplyHeader.precision) and carry values of that type, widened here to float32.
  uint32_t precision = wire::FP32;
  std::vector<wire::ShardStats>* stats = nullptr;     // STATS: appended to
  std::vector<wire::DumpPart>* dump_parts = nullptr;  // DUMP: appended to
  uint64_t* loaded_rows = nullptr;                    // LOAD: added to
};

// Decodes the header of a reply (frames[0]) from the lane described by `from`. Fails
// with kInternal ("malformed reply from ...") when there is no frame or it does not
// parse.
Status DecodeReplyHeader(std::span<const std::string_view> frames, std::string_view from,
                         wire::ReplyHeader* rh);

// Applies a reply of the lane `from` (all its frames, header `rh` decoded from the first)
// to the part `sent` of a request. An error code in the header is returned as the Status
// it stands for (common/net/wire.h), with a message naming the lane, op and request id. An
// OK reply's stats, dump parts and loaded rows go to `target`; so do the rows of an OK
// PULL reply, whose frames must match `sent` (values of every key in target.precision,
// then counts) and whose precision must be target.precision: if not, the result is
// kInternal ("malformed pull reply ...", naming both precisions when they differ) and no
// row is written.
// Frames after the header of any other reply are ignored.
Status DecodeReply(const wire::ReplyHeader& rh, std::span<const std::string_view> frames,
                   const LaneRequest& sent, const ReplyTarget& target, std::string_view from);

}  // namespace din
