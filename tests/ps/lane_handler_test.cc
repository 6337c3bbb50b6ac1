// Malformed requests straight into a lane's handler: each gets an error reply naming the
// problem, and no row is created or changed.
#include <gtest/gtest.h>

#include "common/hash.h"
#include "common/wire.h"
#include "ps/server.h"
#include "tests/ps/local_cluster.h"

namespace din {
namespace {

constexpr char kConfig[] = R"pb(
  tables {
    name: "a"
    dim: 4
    shards: 4
    optimizer { sgd { learning_rate: 1 } }
  }
  tables { name: "b" dim: 2 shards: 1 }
  ps { max_request_keys: 1000 }
)pb";

class LaneHandlerTest : public ::testing::Test {
 protected:
  LaneHandlerTest() : cfg_(testing::MustParse(kConfig)), placement_(cfg_, {2}) {
    for (const auto& t : cfg_.tables()) tables_.emplace_back(t);
    lane0_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 0, 1000);
  }

  // Keys of table `t` that fall into `shard`.
  std::vector<uint64_t> KeysOf(int t, uint32_t shard, int n) {
    std::vector<uint64_t> keys;
    for (uint64_t k = 1; static_cast<int>(keys.size()) < n; ++k)
      if (ShardOf(k, cfg_.tables(t).shards()) == shard) keys.push_back(k);
    return keys;
  }

  static std::vector<zmq::message_t> Request(wire::Op op, const std::vector<wire::Segment>& segs,
                                             const std::vector<uint64_t>& keys,
                                             const std::vector<float>* floats = nullptr,
                                             uint32_t version = wire::CURRENT_VERSION) {
    wire::RequestHeader h;
    h.set_version(version);
    h.set_op(op);
    h.set_request_id(77);
    for (const auto& s : segs) *h.add_segments() = s;
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    frames.push_back(ArrayFrame<uint64_t>(keys));
    if (floats != nullptr) frames.push_back(ArrayFrame<float>(*floats));
    return frames;
  }
  static wire::Segment Seg(uint32_t table, uint32_t shard, uint64_t count) {
    wire::Segment s;
    s.set_table(table);
    s.set_shard(shard);
    s.set_count(count);
    return s;
  }
  wire::ReplyHeader Send(std::vector<zmq::message_t> frames,
                         std::vector<zmq::message_t>* reply_out = nullptr) {
    std::vector<zmq::message_t> reply = lane0_->Handle(frames);
    wire::ReplyHeader rh;
    EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    if (reply_out) *reply_out = std::move(reply);
    return rh;
  }
  void ExpectRejected(std::vector<zmq::message_t> frames, const std::string& needle) {
    wire::ReplyHeader rh = Send(std::move(frames));
    EXPECT_EQ(rh.code(), wire::INVALID_REQUEST);
    EXPECT_NE(rh.error().find(needle), std::string::npos) << rh.error();
    EXPECT_EQ(Rows(), 0u) << "a rejected request created rows";
  }
  uint64_t Rows() {
    uint64_t rows = 0;
    for (uint32_t s = 0; s < 4; ++s)
      if (auto* st = lane0_->store(0, s)) rows += st->size();
    if (auto* st = lane0_->store(1, 0)) rows += st->size();
    return rows;
  }

  config::TrainConfig cfg_;
  Placement placement_;
  std::vector<TableSpec> tables_;
  std::unique_ptr<LaneHandler> lane0_;
};

TEST_F(LaneHandlerTest, LaneServesEveryOtherShard) {
  // One server with two lanes: shards 0 and 2 of table a are lane 0's.
  EXPECT_NE(lane0_->store(0, 0), nullptr);
  EXPECT_EQ(lane0_->store(0, 1), nullptr);
  EXPECT_NE(lane0_->store(0, 2), nullptr);
  EXPECT_EQ(lane0_->store(0, 3), nullptr);
}

TEST_F(LaneHandlerTest, RejectsMalformedRequests) {
  const auto keys = KeysOf(0, 0, 3);
  ExpectRejected({}, "cannot parse request header");
  {
    std::vector<zmq::message_t> junk;
    junk.emplace_back("\xff\xff\xff\xff\x0f garbage", 14);
    ExpectRejected(std::move(junk), "cannot parse request header");
  }
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, 3)}, keys, nullptr, 9), "unsupported wire version");
  ExpectRejected(Request(static_cast<wire::Op>(42), {Seg(0, 0, 3)}, keys), "unknown op");
  std::vector<float> grads(12, 1.0f);
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, 3)}, keys, &grads), "needs 2 frames, got 3");
  ExpectRejected(Request(wire::PUSH, {Seg(0, 0, 3)}, keys), "needs 3 frames, got 2");
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, 4)}, keys), "keys frame has 24 bytes");
  ExpectRejected(Request(wire::PULL, {Seg(7, 0, 3)}, keys), "unknown table 7");
  ExpectRejected(Request(wire::PULL, {Seg(0, 9, 3)}, keys), "out of range");
  ExpectRejected(Request(wire::PULL, {Seg(0, 1, 3)}, KeysOf(0, 1, 3)), "not served by");
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, uint64_t{1} << 40)}, keys),
                 "larger than ps.max_request_keys");
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, 600), Seg(0, 2, 600)}, keys),
                 "larger than ps.max_request_keys");
  // Key 2's shard is not 0.
  std::vector<uint64_t> wrong = keys;
  wrong[1] = KeysOf(0, 2, 1)[0];
  ExpectRejected(Request(wire::PULL, {Seg(0, 0, 3)}, wrong), "does not belong to shard 0");
  std::vector<float> short_grads(11, 1.0f);
  ExpectRejected(Request(wire::PUSH, {Seg(0, 0, 3)}, keys, &short_grads), "gradient frame has 44");
  {
    auto frames = Request(wire::PULL, {Seg(0, 0, 3)}, keys);
    frames[1] = zmq::message_t(23);  // not a whole number of keys
    ExpectRejected(std::move(frames), "keys frame has 23 bytes");
  }
}

TEST_F(LaneHandlerTest, BadPushChangesNoRow) {
  const auto keys = KeysOf(0, 0, 3);
  std::vector<zmq::message_t> reply;
  ASSERT_EQ(Send(Request(wire::PULL, {Seg(0, 0, 3)}, keys), &reply).code(), wire::OK);
  ASSERT_EQ(reply.size(), 3u);
  std::vector<float> before(12);
  std::memcpy(before.data(), reply[1].data(), 48);
  // The second key's gradient would land, the third key is in the wrong shard: nothing lands.
  std::vector<uint64_t> mixed = {keys[0], keys[1], KeysOf(0, 2, 1)[0]};
  std::vector<float> grads(12, 1.0f);
  EXPECT_EQ(Send(Request(wire::PUSH, {Seg(0, 0, 3)}, mixed, &grads)).code(), wire::INVALID_REQUEST);
  ASSERT_EQ(Send(Request(wire::PULL, {Seg(0, 0, 3)}, keys), &reply).code(), wire::OK);
  EXPECT_EQ(std::memcmp(before.data(), reply[1].data(), 48), 0);
  // A good push then lands (lr 1: w - g).
  EXPECT_EQ(Send(Request(wire::PUSH, {Seg(0, 0, 3)}, keys, &grads)).code(), wire::OK);
  ASSERT_EQ(Send(Request(wire::PULL, {Seg(0, 0, 3)}, keys), &reply).code(), wire::OK);
  const float* after = static_cast<const float*>(reply[1].data());
  for (int i = 0; i < 12; ++i) EXPECT_EQ(after[i], before[i] - 1.0f);
}

TEST_F(LaneHandlerTest, RequestIdIsEchoed) {
  wire::RequestHeader h;
  h.set_version(wire::CURRENT_VERSION);
  h.set_op(wire::PING);
  h.set_request_id(123456);
  std::vector<zmq::message_t> frames;
  frames.push_back(EncodeFrame(h));
  wire::ReplyHeader rh = Send(std::move(frames));
  EXPECT_EQ(rh.code(), wire::OK);
  EXPECT_EQ(rh.request_id(), 123456u);
}

}  // namespace
}  // namespace din
