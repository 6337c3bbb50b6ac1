// The mapping between Status codes and the error codes of a reply (common/net/wire.h).
#include "common/net/wire.h"

#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace din {
namespace {

using ::testing::HasSubstr;

// Every StatusCode, kOk to kUnimplemented (the last one).
std::vector<StatusCode> AllStatusCodes() {
  std::vector<StatusCode> codes;
  for (int c = 0; c <= static_cast<int>(StatusCode::kUnimplemented); ++c)
    codes.push_back(static_cast<StatusCode>(c));
  return codes;
}

TEST(WireCodeTest, EveryStatusCodeRoundTrips) {
  std::set<int> wire_codes;
  for (StatusCode code : AllStatusCodes()) {
    const wire::Code w = ToWireCode(code);
    EXPECT_TRUE(wire::Code_IsValid(w)) << StatusCodeName(code);
    EXPECT_EQ(FromWireCode(w), code) << StatusCodeName(code) << " -> " << wire::Code_Name(w);
    wire_codes.insert(w);
  }
  // No two StatusCodes share a wire code, and OK is only kOk's.
  EXPECT_EQ(wire_codes.size(), AllStatusCodes().size());
  EXPECT_EQ(ToWireCode(StatusCode::kOk), wire::OK);
  EXPECT_EQ(ToWireCode(StatusCode::kInvalidArgument), wire::INVALID_REQUEST);
  EXPECT_EQ(ToWireCode(StatusCode::kResourceExhausted), wire::RESOURCE_EXHAUSTED);
}

TEST(WireCodeTest, EveryWireCodeRoundTrips) {
  for (int w = wire::Code_MIN; w <= wire::Code_MAX; ++w) {
    if (!wire::Code_IsValid(w)) continue;
    EXPECT_EQ(ToWireCode(FromWireCode(w)), w) << wire::Code_Name(static_cast<wire::Code>(w));
  }
}

TEST(WireCodeTest, UnknownWireCodesAreInternal) {
  for (int w : {-1, wire::Code_MAX + 1, 99, 1 << 30})
    EXPECT_EQ(FromWireCode(w), StatusCode::kInternal) << w;
}

// A reply header through its bytes, as a client reads it.
wire::ReplyHeader Reparse(const wire::ReplyHeader& rh) {
  wire::ReplyHeader out;
  EXPECT_TRUE(out.ParseFromString(rh.SerializeAsString()));
  return out;
}

TEST(ReplyStatusTest, StatusTravelsWithCodeAndMessage) {
  for (StatusCode code : AllStatusCodes()) {
    const Status sent = code == StatusCode::kOk
                            ? Status::Ok()
                            : Status(code, std::string("why: ") + StatusCodeName(code));
    wire::ReplyHeader rh;
    rh.set_request_id(7);
    SetReplyStatus(sent, &rh);
    const Status got = ReplyStatus(Reparse(rh));
    EXPECT_EQ(got.code(), sent.code()) << StatusCodeName(code);
    EXPECT_EQ(got.message(), sent.message()) << StatusCodeName(code);
  }
}

TEST(ReplyStatusTest, OkClearsAnEarlierError) {
  wire::ReplyHeader rh;
  SetReplyStatus(Status::InvalidArgument("bad"), &rh);
  SetReplyStatus(Status::Ok(), &rh);
  EXPECT_TRUE(ReplyStatus(Reparse(rh)).ok());
  EXPECT_FALSE(rh.has_error());
}

// A code from a newer peer: Protobuf reads code() as OK and keeps the value aside; the
// reply must still read as an error.
TEST(ReplyStatusTest, UnknownCodeInAReplyIsInternal) {
  wire::ReplyHeader known;
  known.set_request_id(3);
  known.set_error("the newer server's reason");
  std::string bytes = known.SerializeAsString();
  bytes += std::string{static_cast<char>(wire::ReplyHeader::kCodeFieldNumber << 3), 99};
  wire::ReplyHeader rh;
  ASSERT_TRUE(rh.ParseFromString(bytes));
  ASSERT_EQ(rh.code(), wire::OK);  // what Protobuf makes of it
  const Status st = ReplyStatus(rh);
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("99"));
  EXPECT_THAT(st.message(), HasSubstr("the newer server's reason"));
}

}  // namespace
}  // namespace din
