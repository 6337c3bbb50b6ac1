#include "common/net/wire.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <google/protobuf/unknown_field_set.h>

namespace din {

struct FramePool::Block {
  std::shared_ptr<FramePool> pool;  // set while the block is lent out
  size_t capacity;
  std::unique_ptr<std::byte[]> data;
};

std::shared_ptr<FramePool> FramePool::Create(size_t max_cached_bytes) {
  return std::shared_ptr<FramePool>(new FramePool(max_cached_bytes));
}

FramePool::~FramePool() {
  for (Block* b : idle_) delete b;
}

size_t FramePool::idle_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_.size();
}

zmq::message_t FramePool::Get(size_t bytes) {
  if (bytes < kMinBytes) return zmq::message_t(bytes);
  Block* block = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The smallest idle block that fits and wastes at most half of itself.
    size_t best = idle_.size();
    for (size_t i = 0; i < idle_.size(); ++i)
      if (idle_[i]->capacity >= bytes && idle_[i]->capacity / 2 <= bytes &&
          (best == idle_.size() || idle_[i]->capacity < idle_[best]->capacity))
        best = i;
    if (best < idle_.size()) {
      block = idle_[best];
      idle_[best] = idle_.back();
      idle_.pop_back();
      idle_bytes_ -= block->capacity;
    }
  }
  if (block == nullptr) {
    // Rounded up to 1/8 of the next power of two, so that sizes that vary a little
    // between requests share blocks.
    const size_t step = std::max<size_t>(4096, std::bit_ceil(bytes) / 8);
    const size_t capacity = (bytes + step - 1) / step * step;
    block = new Block{nullptr, capacity, std::make_unique_for_overwrite<std::byte[]>(capacity)};
  }
  block->pool = shared_from_this();
  return zmq::message_t(block->data.get(), bytes, &FramePool::Release, block);
}

void FramePool::Release(void* /*data*/, void* hint) {
  Block* block = static_cast<Block*>(hint);
  std::shared_ptr<FramePool> pool = std::move(block->pool);
  {
    std::lock_guard<std::mutex> lock(pool->mu_);
    if (pool->idle_bytes_ + block->capacity <= pool->max_cached_) {
      pool->idle_.push_back(block);
      pool->idle_bytes_ += block->capacity;
      return;
    }
  }
  delete block;
}

Status CheckRequestPrecision(const wire::RequestHeader& h) {
  const uint32_t p = h.precision();
  if (!wire::Precision_IsValid(static_cast<int>(p)) || p > wire::Precision_MAX)
    return Status::InvalidArgument("unknown wire " + PrecisionName(p) + " on " +
                                   wire::Op_Name(h.op()) + " (this server knows FP32, FP16, BF16)");
  if (p != wire::FP32 && h.op() != wire::PULL && h.op() != wire::PUSH)
    return Status::InvalidArgument("wire precision " + PrecisionName(p) +
                                   " is only valid on PULL and PUSH, not " + wire::Op_Name(h.op()));
  if (h.has_grad_scale_exp()) {
    if (h.op() != wire::PUSH || p != wire::FP16)
      return Status::InvalidArgument(
          "grad_scale_exp is only valid on a PUSH of FP16 gradients, not " + wire::Op_Name(h.op()) +
          " with " + PrecisionName(p));
    if (h.grad_scale_exp() > kMaxGradScaleExp || h.grad_scale_exp() < -kMaxGradScaleExp)
      return Status::InvalidArgument("grad_scale_exp " + std::to_string(h.grad_scale_exp()) +
                                     " out of range (|exp| <= " + std::to_string(kMaxGradScaleExp) +
                                     ")");
  }
  return Status::Ok();
}

std::string PrecisionName(uint32_t precision) {
  if (precision <= static_cast<uint32_t>(wire::Precision_MAX) &&
      wire::Precision_IsValid(static_cast<int>(precision)))
    return wire::Precision_Name(static_cast<wire::Precision>(precision));
  return "precision " + std::to_string(precision);
}

int Fp16GradScaleExp(float max_abs) {
  if (!(max_abs > 0) || !std::isfinite(max_abs)) return 0;
  const int e = std::ilogb(max_abs);  // 2^e <= max_abs < 2^(e+1)
  return std::clamp(14 - e, -kMaxGradScaleExp, kMaxGradScaleExp);
}

std::span<const float> GradientFloats(const wire::RequestHeader& h, const zmq::message_t& frame,
                                      std::vector<float>* scratch) {
  const WeightFormat f = RequestPrecision(h);
  if (f == WeightFormat::kFp32) return FrameAs<float>(frame, scratch);
  const size_t n = frame.size() / 2;
  scratch->resize(n);
  HalvesToFloats(frame.data(), n, f, std::ldexp(1.0f, -h.grad_scale_exp()), scratch->data());
  return {scratch->data(), n};
}

wire::Code ToWireCode(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return wire::OK;
    case StatusCode::kInvalidArgument:
      return wire::INVALID_REQUEST;
    case StatusCode::kNotFound:
      return wire::NOT_FOUND;
    case StatusCode::kIoError:
      return wire::IO_ERROR;
    case StatusCode::kTimeout:
      return wire::TIMEOUT;
    case StatusCode::kUnavailable:
      return wire::UNAVAILABLE;
    case StatusCode::kResourceExhausted:
      return wire::RESOURCE_EXHAUSTED;
    case StatusCode::kInternal:
      return wire::INTERNAL;
    case StatusCode::kUnimplemented:
      return wire::UNIMPLEMENTED;
  }
  return wire::INTERNAL;
}

StatusCode FromWireCode(int code) {
  if (!wire::Code_IsValid(code)) return StatusCode::kInternal;
  switch (static_cast<wire::Code>(code)) {
    case wire::OK:
      return StatusCode::kOk;
    case wire::INVALID_REQUEST:
      return StatusCode::kInvalidArgument;
    case wire::NOT_FOUND:
      return StatusCode::kNotFound;
    case wire::IO_ERROR:
      return StatusCode::kIoError;
    case wire::TIMEOUT:
      return StatusCode::kTimeout;
    case wire::UNAVAILABLE:
      return StatusCode::kUnavailable;
    case wire::RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    case wire::INTERNAL:
      return StatusCode::kInternal;
    case wire::UNIMPLEMENTED:
      return StatusCode::kUnimplemented;
  }
  return StatusCode::kInternal;
}

void SetReplyStatus(const Status& status, wire::ReplyHeader* rh) {
  if (status.ok()) {
    rh->clear_code();
    rh->clear_error();
    return;
  }
  rh->set_code(ToWireCode(status.code()));
  rh->set_error(status.message());
}

Status ReplyStatus(const wire::ReplyHeader& rh) {
  const google::protobuf::UnknownFieldSet& unknown = rh.unknown_fields();
  for (int i = 0; i < unknown.field_count(); ++i) {
    const google::protobuf::UnknownField& f = unknown.field(i);
    if (f.number() != wire::ReplyHeader::kCodeFieldNumber) continue;
    const std::string code = f.type() == google::protobuf::UnknownField::TYPE_VARINT
                                 ? std::to_string(static_cast<int64_t>(f.varint()))
                                 : "of the wrong wire type";
    return Status::Internal("reply with unknown error code " + code +
                            (rh.error().empty() ? "" : ": " + rh.error()));
  }
  if (rh.code() == wire::OK) return Status::Ok();
  return Status(FromWireCode(rh.code()), rh.error());
}

}  // namespace din
