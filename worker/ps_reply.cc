#include "worker/ps_reply.h"

#include <cstring>
#include <string>

#include "common/net/wire.h"

namespace din {

Status DecodeReplyHeader(std::span<const std::string_view> frames, std::string_view from,
                         wire::ReplyHeader* rh) {
  if (frames.empty() || !rh->ParseFromArray(frames[0].data(), static_cast<int>(frames[0].size())))
    return Status::Internal("malformed reply from " + std::string(from));
  return Status::Ok();
}

Status DecodeReply(const wire::ReplyHeader& rh, std::span<const std::string_view> frames,
                   const LaneRequest& sent, const ReplyTarget& target, std::string_view from) {
  const Status refused = ReplyStatus(rh);
  if (!refused.ok())
    return Status(refused.code(), std::string(from) + " refused " + wire::Op_Name(target.op) +
                                      " request #" + std::to_string(rh.request_id()) + ": " +
                                      refused.message());
  if (target.op == wire::PULL) {
    uint64_t floats = 0;
    for (const RequestSegment& s : sent.segments)
      floats += uint64_t{s.count} * target.dims[s.entry];
    if (rh.precision() != target.precision)
      return Status::Internal("malformed pull reply from " + std::string(from) + ": values in " +
                              PrecisionName(rh.precision()) + ", the request asked for " +
                              PrecisionName(target.precision));
    const WeightFormat wire = static_cast<WeightFormat>(target.precision);
    const size_t value_bytes = WeightBytes(wire);
    if (frames.size() != 3 || frames[1].size() != floats * value_bytes ||
        frames[2].size() != sent.items.size() * sizeof(uint32_t))
      return Status::Internal("malformed pull reply from " + std::string(from));
    const char* values = frames[1].data();
    const char* counts = frames[2].data();
    size_t k = 0, off = 0;
    for (const RequestSegment& s : sent.segments) {
      TablePull* out = target.outs[s.entry];
      const uint32_t dim = target.dims[s.entry];
      const size_t row_bytes = dim * value_bytes;
      float* out_values = out->values.data();
      uint32_t* out_counts = out->counts.data();
      for (uint32_t i = 0; i < s.count; ++i, ++k, off += row_bytes) {
        const uint32_t u = sent.items[k];
        if (wire == WeightFormat::kFp32)
          CopyRow(out_values + size_t{u} * dim, values + off, row_bytes);
        else
          HalvesToFloats(values + off, dim, wire, 1.0f, out_values + size_t{u} * dim);
        std::memcpy(out_counts + u, counts + k * sizeof(uint32_t), sizeof(uint32_t));
      }
    }
  }
  if (target.stats != nullptr)
    for (const auto& st : rh.stats()) target.stats->push_back(st);
  if (target.dump_parts != nullptr)
    for (const auto& part : rh.dump_parts()) target.dump_parts->push_back(part);
  if (target.loaded_rows != nullptr) *target.loaded_rows += rh.loaded_rows();
  return Status::Ok();
}

}  // namespace din
