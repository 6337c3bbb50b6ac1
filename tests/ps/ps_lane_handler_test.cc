// Malformed requests straight into a lane's handler: each gets an error reply naming the
// problem, and no row is created or changed.
#include <gtest/gtest.h>

#include "common/hash.h"
#include "common/net/wire.h"
#include "ps/lane_handler.h"
#include "tests/testing/config.h"

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
  LaneHandlerTest() : cfg_(test::MustParse(kConfig)), placement_(cfg_, {2}) {
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

// Ops without keys refuse segments instead of ignoring them (a header may declare any
// count there).
TEST_F(LaneHandlerTest, SegmentsOnAnOpWithoutKeysAreRefused) {
  for (wire::Op op : {wire::PING, wire::STATS}) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(op);
    wire::Segment* seg = h.add_segments();
    seg->set_table(0);
    seg->set_shard(0);
    seg->set_count(4294967290u);
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    wire::ReplyHeader rh = Send(std::move(frames));
    EXPECT_EQ(rh.code(), wire::INVALID_REQUEST) << wire::Op_Name(op);
    EXPECT_NE(rh.error().find("carries no keys but declares 1 segment"), std::string::npos)
        << rh.error();
  }
}

// ---- max_rows_per_shard ------------------------------------------------------------

// One lane serving three one-shard tables: "f" (cap 5, FAIL), "s" (cap 5, SKIP_NEW) and
// "u" (no cap). Rows start at 0.5 and SGD with lr 1 subtracts the gradient.
constexpr char kCapConfig[] = R"pb(
  tables {
    name: "f"
    dim: 2
    max_rows_per_shard: 5
    initializer { kind: CONSTANT value: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
  tables {
    name: "s"
    dim: 2
    max_rows_per_shard: 5
    when_full: SKIP_NEW
    initializer { kind: CONSTANT value: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
  tables {
    name: "u"
    dim: 2
    initializer { kind: CONSTANT value: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
)pb";

class CapTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kF = 0, kS = 1, kU = 2;

  CapTest() : cfg_(test::MustParse(kCapConfig)), placement_(cfg_, {1}) {
    for (const auto& t : cfg_.tables()) tables_.emplace_back(t);
    lane_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 0, 1000);
  }

  // Keys 1..n of one table (every key is in shard 0 of a one-shard table).
  static std::vector<uint64_t> Keys(uint64_t first, uint64_t n) {
    std::vector<uint64_t> keys(n);
    for (uint64_t i = 0; i < n; ++i) keys[i] = first + i;
    return keys;
  }

  // One segment per (table, keys) pair; frame 2 is `floats` (PUSH) or `counts`
  // (PUSH_COUNTS).
  wire::ReplyHeader Send(wire::Op op,
                         const std::vector<std::pair<uint32_t, std::vector<uint64_t>>>& segs,
                         std::vector<zmq::message_t>* reply_out = nullptr,
                         wire::PullMode mode = wire::TRAIN, float grad = 0.25f,
                         uint32_t count = 3) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(op);
    h.set_mode(mode);
    std::vector<uint64_t> keys;
    for (const auto& [table, ks] : segs) {
      wire::Segment* seg = h.add_segments();
      seg->set_table(table);
      seg->set_shard(0);
      seg->set_count(ks.size());
      keys.insert(keys.end(), ks.begin(), ks.end());
    }
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    frames.push_back(ArrayFrame<uint64_t>(keys));
    if (op == wire::PUSH)
      frames.push_back(ArrayFrame<float>(std::vector<float>(keys.size() * 2, grad)));
    if (op == wire::PUSH_COUNTS)
      frames.push_back(ArrayFrame<uint32_t>(std::vector<uint32_t>(keys.size(), count)));
    std::vector<zmq::message_t> reply = lane_->Handle(frames);
    wire::ReplyHeader rh;
    EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    if (reply_out) *reply_out = std::move(reply);
    return rh;
  }

  // Evaluation pull (creates nothing): per key, its two weights and its count.
  struct Row {
    float w0, w1;
    uint32_t count;
    bool operator==(const Row&) const = default;
  };
  std::vector<Row> Read(uint32_t table, const std::vector<uint64_t>& keys) {
    std::vector<zmq::message_t> reply;
    EXPECT_EQ(Send(wire::PULL, {{table, keys}}, &reply, wire::EVAL).code(), wire::OK);
    return Parse(reply, keys.size());
  }
  static std::vector<Row> Parse(const std::vector<zmq::message_t>& reply, size_t n) {
    std::vector<Row> rows(n);
    if (reply.size() != 3) return rows;
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&rows[i].w0, static_cast<const char*>(reply[1].data()) + 8 * i, 4);
      std::memcpy(&rows[i].w1, static_cast<const char*>(reply[1].data()) + 8 * i + 4, 4);
      std::memcpy(&rows[i].count, static_cast<const char*>(reply[2].data()) + 4 * i, 4);
    }
    return rows;
  }
  uint64_t Size(uint32_t table) { return lane_->store(static_cast<int>(table), 0)->size(); }

  void ExpectFull(const wire::ReplyHeader& rh) {
    EXPECT_EQ(rh.code(), wire::RESOURCE_EXHAUSTED);
    for (const char* needle :
         {"table f shard 0", "on server 0", "max_rows_per_shard = 5", "when_full: FAIL"})
      EXPECT_NE(rh.error().find(needle), std::string::npos) << needle << " in: " << rh.error();
  }

  config::TrainConfig cfg_;
  Placement placement_;
  std::vector<TableSpec> tables_;
  std::unique_ptr<LaneHandler> lane_;
};

TEST_F(CapTest, FailFillsExactlyToTheCap) {
  ASSERT_EQ(Send(wire::PULL, {{kF, Keys(1, 3)}}).code(), wire::OK);
  EXPECT_EQ(Size(kF), 3u);
  // Two known keys, two new ones and one new key twice: 3 + 2 distinct new = 5, the cap.
  ASSERT_EQ(Send(wire::PUSH, {{kF, {1, 2, 4, 5, 5}}}).code(), wire::OK);
  EXPECT_EQ(Size(kF), 5u);
  // Known keys keep working at the cap.
  ASSERT_EQ(Send(wire::PUSH_COUNTS, {{kF, Keys(1, 5)}}).code(), wire::OK);
  ASSERT_EQ(Send(wire::PULL, {{kF, Keys(1, 5)}}).code(), wire::OK);
  EXPECT_EQ(Size(kF), 5u);
  // An evaluation pull of an unknown key reads zeros and creates nothing.
  EXPECT_EQ(Read(kF, {99}), (std::vector<Row>{{0, 0, 0}}));
  EXPECT_EQ(Size(kF), 5u);
}

TEST_F(CapTest, FailRejectsTheWholeRequestBeforeApplyingAnything) {
  ASSERT_EQ(Send(wire::PULL, {{kF, Keys(1, 4)}, {kU, Keys(1, 2)}}).code(), wire::OK);
  ASSERT_EQ(Send(wire::PUSH_COUNTS, {{kF, Keys(1, 4)}, {kU, Keys(1, 2)}}).code(), wire::OK);
  const std::vector<Row> f_before = Read(kF, Keys(1, 4));
  const std::vector<Row> u_before = Read(kU, Keys(1, 2));
  ASSERT_EQ(f_before[0], (Row{0.5f, 0.5f, 3}));

  // Each of these would make row 6 of "f" (4 rows + 2 new). The keys of "f" come after
  // known keys and after keys of an uncapped table that would create rows: none lands.
  const std::vector<std::pair<uint32_t, std::vector<uint64_t>>> over = {{kU, {1, 2, 50, 51}},
                                                                        {kF, {1, 2, 3, 4, 10, 11}}};
  ExpectFull(Send(wire::PUSH, over));
  ExpectFull(Send(wire::PUSH_COUNTS, over));
  ExpectFull(Send(wire::PULL, over));
  // The shard named twice: each segment alone fits, together they do not.
  ExpectFull(Send(wire::PUSH, {{kF, {1, 20}}, {kU, {1}}, {kF, {2, 21}}}));

  EXPECT_EQ(Size(kF), 4u);
  EXPECT_EQ(Size(kU), 2u);
  EXPECT_EQ(Read(kF, Keys(1, 4)), f_before);
  EXPECT_EQ(Read(kU, Keys(1, 2)), u_before);

  // One new key still fits, and then the shard is at its cap.
  ASSERT_EQ(Send(wire::PUSH, {{kF, {1, 10}}}, nullptr, wire::TRAIN, 0.5f).code(), wire::OK);
  EXPECT_EQ(Size(kF), 5u);
  EXPECT_EQ(Read(kF, {1, 10}), (std::vector<Row>{{0, 0, 3}, {0, 0, 0}}));
  ExpectFull(Send(wire::PULL, {{kF, {11}}}));
}

// The keys of a request are looked up in windows of ShardStore::kWindow: new keys past
// the first window count as much as those in it.
TEST_F(CapTest, FailCountsNewKeysPastTheFirstWindow) {
  ASSERT_EQ(Send(wire::PULL, {{kF, Keys(1, 3)}}).code(), wire::OK);
  std::vector<uint64_t> keys(ShardStore::kWindow, 1);  // a known key, a window of it
  for (uint64_t k : {4, 5, 6}) keys.push_back(k);      // 3 + 3 new rows > 5
  ExpectFull(Send(wire::PUSH, {{kF, keys}}));
  EXPECT_EQ(Size(kF), 3u);
  keys.pop_back();
  ASSERT_EQ(Send(wire::PUSH, {{kF, keys}}).code(), wire::OK);
  EXPECT_EQ(Size(kF), 5u);
}

TEST_F(CapTest, SkipNewAdmitsUpToTheCapAndDropsTheRest) {
  ASSERT_EQ(Send(wire::PULL, {{kU, Keys(1, 3)}}).code(), wire::OK);
  // A training pull of 7 new IDs: the first 5 get rows (initialised to 0.5), the other
  // two read zeros with count 0, as an evaluation pull of unknown IDs does.
  std::vector<zmq::message_t> reply;
  ASSERT_EQ(Send(wire::PULL, {{kS, Keys(1, 7)}}, &reply).code(), wire::OK);
  EXPECT_EQ(Size(kS), 5u);
  const std::vector<Row> pulled = Parse(reply, 7);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(pulled[i], (Row{0.5f, 0.5f, 0})) << i;
  for (int i = 5; i < 7; ++i) EXPECT_EQ(pulled[i], (Row{0, 0, 0})) << i;

  // Pushes and counts to IDs 6, 7 (and a new 8) are dropped; 1..5 get theirs.
  ASSERT_EQ(Send(wire::PUSH, {{kS, Keys(1, 8)}}, nullptr, wire::TRAIN, 0.25f).code(), wire::OK);
  ASSERT_EQ(Send(wire::PUSH_COUNTS, {{kS, Keys(1, 8)}}, nullptr, wire::TRAIN, 0, 2).code(),
            wire::OK);
  EXPECT_EQ(Size(kS), 5u);
  const std::vector<Row> after = Read(kS, Keys(1, 8));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(after[i], (Row{0.25f, 0.25f, 2})) << i;
  for (int i = 5; i < 8; ++i) EXPECT_EQ(after[i], (Row{0, 0, 0})) << i;

  // The uncapped table in the same request is unaffected; its rows are unchanged.
  ASSERT_EQ(Send(wire::PULL, {{kS, {9}}, {kU, Keys(1, 4)}}, &reply).code(), wire::OK);
  EXPECT_EQ(Size(kU), 4u);
  EXPECT_EQ(Read(kU, Keys(1, 4)), (std::vector<Row>(4, Row{0.5f, 0.5f, 0})));

  // STATS: the cap and the skipped keys (2 pulled + 3 pushed + 3 counted + 1 pulled).
  wire::RequestHeader h;
  h.set_version(wire::CURRENT_VERSION);
  h.set_op(wire::STATS);
  std::vector<zmq::message_t> frames;
  frames.push_back(EncodeFrame(h));
  std::vector<zmq::message_t> stats_reply = lane_->Handle(frames);
  wire::ReplyHeader rh;
  ASSERT_TRUE(DecodeFrame(stats_reply[0], &rh));
  ASSERT_EQ(rh.stats_size(), 3);
  for (const auto& st : rh.stats()) {
    SCOPED_TRACE("table " + std::to_string(st.table()));
    EXPECT_EQ(st.max_rows(), st.table() == kU ? 0u : 5u);
    EXPECT_EQ(st.skipped_keys(), st.table() == kS ? 9u : 0u);
    EXPECT_EQ(st.rows(), st.table() == kU ? 4u : st.table() == kS ? 5u : 0u);
  }
}

// ---- half-precision storage ----------------------------------------------------------

// One-shard tables "h16" (fp16) and "b16" (bf16), dim 4, rows start at 1.0; SGD with
// lr 1 subtracts the gradient.
constexpr char kHalfConfig[] = R"pb(
  tables {
    name: "h16"
    dim: 4
    storage: FP16
    initializer { kind: CONSTANT value: 1 }
    optimizer { sgd { learning_rate: 1 } }
  }
  tables {
    name: "b16"
    dim: 4
    storage: BF16
    initializer { kind: CONSTANT value: 1 }
    optimizer { sgd { learning_rate: 1 } }
  }
)pb";

std::vector<zmq::message_t> HalfRequest(wire::Op op, uint32_t table, uint64_t key, float grad) {
  wire::RequestHeader h;
  h.set_version(wire::CURRENT_VERSION);
  h.set_op(op);
  h.set_mode(wire::TRAIN);
  wire::Segment* seg = h.add_segments();
  seg->set_table(table);
  seg->set_shard(0);
  seg->set_count(1);
  std::vector<zmq::message_t> frames;
  frames.push_back(EncodeFrame(h));
  frames.push_back(ArrayFrame<uint64_t>(std::vector<uint64_t>{key}));
  if (op == wire::PUSH) frames.push_back(ArrayFrame<float>(std::vector<float>(4, grad)));
  return frames;
}

TEST(HalfStorageTest, SmallUpdatesAccumulateAndRerunsStoreTheSameBits) {
  // Each push moves a weight by 1e-4, under half an ulp of either format near 1 (fp16:
  // 2.4e-4 below 1.0, bf16: 2e-3), so rounding to nearest would keep every weight at 1.0
  // for ever. Stochastic rounding keeps the expected stored value on the float32 path:
  // after 1000 pushes about 0.9.
  const config::TrainConfig cfg = test::MustParse(kHalfConfig);
  const Placement placement(cfg, {1});
  std::vector<TableSpec> tables;
  for (const auto& t : cfg.tables()) tables.emplace_back(t);
  LaneHandler a(tables, placement, 0, 0, 1000);
  LaneHandler b(tables, placement, 0, 0, 1000);
  for (uint32_t t = 0; t < 2; ++t) {
    for (int i = 0; i < 1000; ++i) {
      for (LaneHandler* lane : {&a, &b}) {
        auto frames = HalfRequest(wire::PUSH, t, 5, 1e-4f);
        std::vector<zmq::message_t> reply = lane->Handle(frames);
        wire::ReplyHeader rh;
        ASSERT_TRUE(DecodeFrame(reply[0], &rh));
        ASSERT_EQ(rh.code(), wire::OK) << rh.error();
      }
    }
    const ShardStore* sa = a.store(static_cast<int>(t), 0);
    const ShardStore* sb = b.store(static_cast<int>(t), 0);
    ASSERT_EQ(sa->row_bytes(), 8u + 4u + 8u);  // no optimizer state
    const uint32_t row = sa->Find(5);
    ASSERT_NE(row, ShardStore::kNoRow);
    // The same requests give the same bits.
    EXPECT_EQ(0, std::memcmp(sa->WeightData(row), sb->WeightData(sb->Find(5)), 8));
    float w[4];
    sa->GetWeights(row, w);
    // Rounding errors of at most one ulp (fp16 4.9e-4, bf16 3.9e-3) each, independent
    // with mean 0: the sum of 1000 has sd about 0.008 (fp16) and 0.06 (bf16).
    const double tol = t == 0 ? 0.03 : 0.2;
    for (float x : w) EXPECT_NEAR(x, 0.9, tol) << WeightFormatName(sa->format()) << " " << x;
    double mean = 0;
    for (float x : w) mean += x / 4;
    EXPECT_LT(mean, 0.99) << "the updates were lost to rounding";
    // A pull reads the stored values as float32.
    auto pull = HalfRequest(wire::PULL, t, 5, 0);
    std::vector<zmq::message_t> reply = a.Handle(pull);
    ASSERT_EQ(reply.size(), 3u);
    ASSERT_EQ(reply[1].size(), 16u);
    EXPECT_EQ(0, std::memcmp(reply[1].data(), w, 16));
  }
}

}  // namespace
}  // namespace din
