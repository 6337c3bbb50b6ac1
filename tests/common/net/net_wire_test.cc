// The mapping between Status codes and the error codes of a reply (common/net/wire.h).
#include "common/net/wire.h"

#include <cstring>
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

// Large frames reuse the pool's memory once ZeroMQ released them; small ones are plain
// messages; a message may outlive every handle to its pool.
TEST(FramePoolTest, ReusesReleasedBlocksAndOutlivesItsOwner) {
  auto pool = FramePool::Create(size_t{8} << 20);
  const size_t big = FramePool::kMinBytes * 4;
  const void* first = nullptr;
  {
    zmq::message_t m = pool->Get(big);
    ASSERT_EQ(m.size(), big);
    first = m.data();
    std::memset(m.data(), 7, m.size());
    EXPECT_EQ(pool->idle_blocks(), 0u);
  }
  EXPECT_EQ(pool->idle_blocks(), 1u);
  {
    zmq::message_t a = pool->Get(big - 100);  // fits the released block
    EXPECT_EQ(a.data(), first);
    zmq::message_t b = pool->Get(big);  // the block is lent: a new one
    EXPECT_NE(b.data(), first);
  }
  EXPECT_EQ(pool->idle_blocks(), 2u);
  zmq::message_t small = pool->Get(100);
  EXPECT_EQ(small.size(), 100u);
  EXPECT_EQ(pool->idle_blocks(), 2u);
  // A much smaller frame does not take a large block.
  zmq::message_t half = pool->Get(FramePool::kMinBytes);
  EXPECT_EQ(pool->idle_blocks(), 2u);
  // Past the cap, released blocks are freed.
  {
    std::vector<zmq::message_t> many;
    for (int i = 0; i < 40; ++i) many.push_back(pool->Get(big));
  }
  EXPECT_LE(pool->idle_blocks() * big, size_t{8} << 20);
  zmq::message_t outliving = pool->Get(big);
  pool.reset();
  std::memset(outliving.data(), 1, outliving.size());  // still valid (ASan checks)
}

}  // namespace
}  // namespace din
