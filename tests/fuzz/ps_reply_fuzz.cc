// Fuzzes how a worker decodes a server's reply (worker/ps_reply.h: DecodeReplyHeader and
// DecodeReply, which PsClient applies to every reply it receives), without sockets. The
// request the reply answers is built here as PsClient would send it to one lane: table x
// (dim 3, 2 shards: one segment per shard) and table y (dim 1), each with its IDs
// deduplicated; the fuzz frames are the reply. How the client routes replies by request
// id and lane (late, duplicate and stray replies, timeouts) is PsClient's and tested in
// tests/worker/worker_ps_client_test.cc.
//
// The expected outcome is modelled independently of the decoder: an undecodable header
// is a "malformed reply" error; an error code (or a code this build does not know) is
// passed on with the kind it stands for, naming the request; an OK PULL reply with the
// wrong frames or in another precision than the request asked for is a "malformed pull
// reply" error and writes no row, and with the right ones every key's row (widened from
// fp16/bf16 by common/half.h's scalar HalfToFloat when the request asked for those) and
// count land where the request says; STATS, DUMP and LOAD return what the reply carries.
//
// Input: op byte, flags byte (bit 0: give a decodable fuzz header the request's id;
// bits 1-2 mod 3: the precision a PULL asked for, FP32, FP16 or BF16), two id-count
// bytes, then the reply frames.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <glog/logging.h>
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include "common/half.h"
#include "common/hash.h"
#include "common/proto/wire.pb.h"
#include "tests/fuzz/fuzz_input.h"
#include "worker/ps_reply.h"

namespace din::fuzz {
namespace {

using google::protobuf::util::MessageDifferencer;

// Equality of two messages where a double field may be NaN (ShardStats has doubles, and
// a fuzzed header may carry any bits there): NaN equals NaN.
template <typename M>
bool SameMessage(const M& a, const M& b) {
  google::protobuf::util::DefaultFieldComparator comparator;
  comparator.set_treat_nan_as_equal(true);
  MessageDifferencer differencer;
  differencer.set_field_comparator(&comparator);
  return differencer.Compare(a, b);
}

constexpr uint32_t kDims[2] = {3, 1};
constexpr uint32_t kShards[2] = {2, 1};
constexpr uint64_t kRequestId = 77;
constexpr char kFrom[] = "server 0 lane 0 (fuzz)";
// What every output value and count holds before decoding: a reply that is refused or
// malformed must leave it so.
constexpr float kUnwritten = -12345.0f;

enum class Op { kPullTrain, kPullEval, kPush, kPushCounts, kStats, kDump, kLoad, kNumOps };

// IDs of table t: n occurrences, about half of them repeats.
std::vector<uint64_t> Ids(int t, int n) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < n; ++i)
    ids.push_back(static_cast<uint64_t>(i % (n / 2 + 1)) * 1000003 + 17 + t);
  return ids;
}

// The StatusCode a wire code stands for, spelled out here rather than taken from
// common/net/wire.h; a code this build does not know is kInternal.
StatusCode CodeOf(const wire::ReplyHeader& rh) {
  const auto& unknown = rh.unknown_fields();
  for (int i = 0; i < unknown.field_count(); ++i)
    if (unknown.field(i).number() == wire::ReplyHeader::kCodeFieldNumber)
      return StatusCode::kInternal;
  switch (rh.code()) {
    case wire::OK:
      return StatusCode::kOk;
    case wire::INVALID_REQUEST:
      return StatusCode::kInvalidArgument;
    case wire::INTERNAL:
      return StatusCode::kInternal;
    case wire::RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    case wire::NOT_FOUND:
      return StatusCode::kNotFound;
    case wire::IO_ERROR:
      return StatusCode::kIoError;
    case wire::TIMEOUT:
      return StatusCode::kTimeout;
    case wire::UNAVAILABLE:
      return StatusCode::kUnavailable;
    case wire::UNIMPLEMENTED:
      return StatusCode::kUnimplemented;
  }
  LOG(FATAL) << "wire code " << rh.code() << " is not modelled";
}

}  // namespace
}  // namespace din::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  using namespace din::fuzz;
  FuzzInput in(data, size);
  const auto op = static_cast<Op>(in.Byte() % static_cast<int>(Op::kNumOps));
  const uint8_t flags = in.Byte();
  const std::vector<uint64_t> ids[2] = {Ids(0, 1 + in.Byte() % 12), Ids(1, 1 + in.Byte() % 12)};
  std::vector<std::string> frames = SplitFrames(&in, 1, 4);

  wire::ReplyHeader fuzz_rh;
  const bool decodable = fuzz_rh.ParseFromString(frames[0]);
  if (decodable && (flags & 1)) {
    fuzz_rh.set_request_id(kRequestId);
    frames[0] = fuzz_rh.SerializeAsString();
  }

  // The request: per table its unique IDs (first-occurrence order); segments x/0, x/1,
  // y/0, each listing its keys' rows.
  ReplyTarget target;
  LaneRequest sent;
  std::vector<TablePull> outs(2);
  std::vector<wire::ShardStats> stats;
  std::vector<wire::DumpPart> parts;
  uint64_t loaded = 0;
  switch (op) {
    case Op::kPullTrain:
    case Op::kPullEval:
      target.op = wire::PULL;
      break;
    case Op::kPush:
      target.op = wire::PUSH;
      break;
    case Op::kPushCounts:
      target.op = wire::PUSH_COUNTS;
      break;
    case Op::kStats:
      target.op = wire::STATS;
      target.stats = &stats;
      break;
    case Op::kDump:
      target.op = wire::DUMP;
      target.dump_parts = &parts;
      break;
    case Op::kLoad:
    case Op::kNumOps:
      target.op = wire::LOAD;
      target.loaded_rows = &loaded;
      break;
  }
  const bool pull = target.op == wire::PULL;
  const uint32_t precision = pull ? (flags >> 1) % 3 : 0;  // FP32, FP16, BF16
  const size_t value_bytes = precision == 0 ? 4 : 2;
  if (pull) target.precision = precision;
  if (pull) {
    for (uint32_t t = 0; t < 2; ++t) {
      TablePull& out = outs[t];
      for (uint64_t id : ids[t])
        if (std::find(out.unique_ids.begin(), out.unique_ids.end(), id) == out.unique_ids.end())
          out.unique_ids.push_back(id);
      out.values.assign(out.unique_ids.size() * kDims[t], kUnwritten);
      out.counts.assign(out.unique_ids.size(), 0xdeadbeef);
      target.outs.push_back(&out);
      target.dims.push_back(kDims[t]);
      for (uint32_t s = 0; s < kShards[t]; ++s) {
        RequestSegment seg{t, t, s, 0};
        for (uint32_t u = 0; u < out.unique_ids.size(); ++u) {
          if (ShardOf(out.unique_ids[u], kShards[t]) != s) continue;
          sent.items.push_back(u);
          ++seg.count;
        }
        if (seg.count > 0) sent.segments.push_back(seg);
      }
    }
  }
  const std::vector<TablePull> before = outs;

  std::vector<std::string_view> views(frames.begin(), frames.end());
  wire::ReplyHeader rh;
  Status st = DecodeReplyHeader(views, kFrom, &rh);
  if (!decodable) {
    CHECK(st.code() == StatusCode::kInternal) << st.ToString();
    CHECK(st.message().find("malformed reply from " + std::string(kFrom)) != std::string::npos)
        << st.ToString();
    return 0;
  }
  CHECK(st.ok()) << st.ToString();
  CHECK(SameMessage(rh, fuzz_rh));
  st = DecodeReply(rh, views, sent, target, kFrom);

  auto untouched = [&] {
    for (int t = 0; t < 2; ++t)
      CHECK(outs[t].values == before[t].values && outs[t].counts == before[t].counts)
          << "a failed reply wrote rows of table " << t;
    CHECK(stats.empty() && parts.empty() && loaded == 0) << "a failed reply delivered contents";
  };
  const StatusCode code = CodeOf(fuzz_rh);
  if (code != StatusCode::kOk) {
    CHECK(st.code() == code) << st.ToString();
    const std::string head = std::string(kFrom) + " refused " + wire::Op_Name(target.op) +
                             " request #" + std::to_string(fuzz_rh.request_id()) + ": ";
    CHECK(st.message().starts_with(head)) << st.ToString();
    CHECK(st.message().find(fuzz_rh.error()) != std::string::npos) << st.ToString();
    untouched();
    return 0;
  }
  const size_t keys = sent.items.size();
  const size_t floats = outs[0].unique_ids.size() * kDims[0] + outs[1].unique_ids.size() * kDims[1];
  if (pull && (fuzz_rh.precision() != precision || frames.size() != 3 ||
               frames[1].size() != value_bytes * floats || frames[2].size() != 4 * keys)) {
    CHECK(st.code() == StatusCode::kInternal) << st.ToString();
    CHECK(st.message().find("malformed pull reply") != std::string::npos) << st.ToString();
    untouched();
    return 0;
  }
  CHECK(st.ok()) << st.ToString();
  if (pull) {
    // Key k of the reply (in send order) is row sent.items[k] of its segment's table.
    size_t k = 0, off = 0;
    for (const RequestSegment& seg : sent.segments) {
      const uint32_t dim = kDims[seg.entry];
      for (uint32_t i = 0; i < seg.count; ++i, ++k, off += dim * value_bytes) {
        const uint32_t u = sent.items[k];
        std::vector<float> want(dim);
        if (precision == 0) {
          std::memcpy(want.data(), frames[1].data() + off, dim * 4);
        } else {
          for (uint32_t j = 0; j < dim; ++j) {
            uint16_t v;
            std::memcpy(&v, frames[1].data() + off + 2 * j, 2);
            want[j] = HalfToFloat(v, precision == 1 ? WeightFormat::kFp16 : WeightFormat::kBf16);
          }
        }
        // A NaN on the wire must arrive as a NaN (fp16: its payload may be quieted).
        for (uint32_t j = 0; j < dim; ++j) {
          const float got = outs[seg.entry].values[u * dim + j];
          CHECK(std::memcmp(&got, &want[j], 4) == 0 ||
                (precision != 0 && std::isnan(got) && std::isnan(want[j])))
              << "row " << u << " of table " << seg.entry << " is not key " << k << "'s";
        }
        CHECK_EQ(0, std::memcmp(&outs[seg.entry].counts[u], frames[2].data() + k * 4, 4))
            << "count " << u << " of table " << seg.entry << " is not key " << k << "'s";
      }
    }
  }
  if (op == Op::kStats) {
    CHECK_EQ(stats.size(), static_cast<size_t>(fuzz_rh.stats_size()));
    for (size_t i = 0; i < stats.size(); ++i)
      CHECK(SameMessage(stats[i], fuzz_rh.stats(static_cast<int>(i))));
  } else {
    CHECK(stats.empty());
  }
  if (op == Op::kDump) {
    CHECK_EQ(parts.size(), static_cast<size_t>(fuzz_rh.dump_parts_size()));
    for (size_t i = 0; i < parts.size(); ++i)
      CHECK(SameMessage(parts[i], fuzz_rh.dump_parts(static_cast<int>(i))));
  } else {
    CHECK(parts.empty());
  }
  CHECK_EQ(loaded, op == Op::kLoad || op == Op::kNumOps ? fuzz_rh.loaded_rows() : 0);
  return 0;
}
