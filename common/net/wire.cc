#include "common/net/wire.h"

#include <string>

#include <google/protobuf/unknown_field_set.h>

namespace din {

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
