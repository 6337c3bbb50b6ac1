// Malformed requests straight into a lane's handler: each gets an error reply naming the
// problem, and no row is created or changed.
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/dump_format.h"

#include "common/hash.h"
#include "common/net/wire.h"
#include "ps/lane_handler.h"
#include "ps/server.h"
#include "tests/testing/config.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

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

// ---- LOAD ---------------------------------------------------------------------------

// Server 0 has two lanes; lane 0 serves shards 0 and 2 of table a (4 shards) and table b,
// lane 1 shards 1 and 3 of table a. A checkpoint of both lanes is loaded by fresh lanes.
class LoadTest : public LaneHandlerTest {
 protected:
  LoadTest() { lane1_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 1, 1000); }

  static wire::ReplyHeader Call(LaneHandler& lane, const wire::RequestHeader& h) {
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    std::vector<zmq::message_t> reply = lane.Handle(frames);
    wire::ReplyHeader rh;
    EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    return rh;
  }
  static wire::ReplyHeader Load(LaneHandler& lane, const std::string& dir) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(wire::LOAD);
    h.mutable_load()->set_dir(dir);
    return Call(lane, h);
  }
  // Table b's part spans two pieces of the streaming load (16384 rows each).
  static int RowsPerShard(int t) { return t == 0 ? 3000 : 20000; }
  // Rows with distinct weights, state and counts in every shard of both lanes, dumped
  // with state into dir with a MANIFEST and _SUCCESS.
  void WriteCheckpoint(const std::string& dir) {
    for (LaneHandler* lane : {lane0_.get(), lane1_.get()})
      for (int t = 0; t < 2; ++t)
        for (uint32_t s = 0; s < tables_[t].shards; ++s) {
          ShardStore* store = lane->store(t, s);
          if (store == nullptr) continue;
          for (uint64_t key : KeysOf(t, s, RowsPerShard(t))) {
            bool inserted = false;
            const uint32_t row = store->FindOrInsert(key, &inserted).value();
            for (uint32_t k = 0; k < store->dim(); ++k)
              store->Weights(row)[k] = static_cast<float>(key) + 0.25f * k;
            for (uint32_t k = 0; k < store->state_floats(); ++k)
              store->State(row)[k] = static_cast<float>(key) * 2 + k;
            store->SetCount(row, static_cast<uint32_t>(key % 1000));
          }
        }
    Manifest m;
    for (int t = 0; t < 2; ++t) {
      ManifestTable mt;
      mt.name = tables_[t].name;
      mt.dim = tables_[t].dim;
      mt.shards = tables_[t].shards;
      mt.counts = true;
      mt.state_floats = tables_[t].optimizer->StateFloats(mt.dim);
      mt.optimizer = tables_[t].optimizer->Name();
      mt.parts.resize(mt.shards);
      m.tables.push_back(mt);
    }
    for (LaneHandler* lane : {lane0_.get(), lane1_.get()}) {
      wire::RequestHeader h;
      h.set_version(wire::CURRENT_VERSION);
      h.set_op(wire::DUMP);
      h.mutable_dump()->set_dir(dir);
      h.mutable_dump()->set_with_state(true);
      wire::ReplyHeader rh = Call(*lane, h);
      ASSERT_EQ(rh.code(), wire::OK) << rh.error();
      for (const auto& p : rh.dump_parts()) {
        ManifestPart& part = m.tables[p.table()].parts[p.shard()];
        part.shard = p.shard();
        part.rows = p.rows();
        m.tables[p.table()].rows += p.rows();
        for (const auto& f : p.files()) part.files.push_back({f.name(), f.bytes(), f.xxh64()});
      }
    }
    test::WriteFile(dir + "/" + kManifestName, FormatManifest(m));
    test::WriteFile(dir + "/" + kSuccessName, "");
  }
  // Every row of `from`'s shards of table t, byte for byte in `to`'s, and no other row.
  static void ExpectSameRows(LaneHandler& from, LaneHandler& to, int t, uint32_t shards) {
    for (uint32_t s = 0; s < shards; ++s) {
      ShardStore* a = from.store(t, s);
      ShardStore* b = to.store(t, s);
      ASSERT_EQ(a == nullptr, b == nullptr);
      if (a == nullptr) continue;
      ASSERT_EQ(a->size(), b->size()) << "table " << t << " shard " << s;
      a->ForEachRow([&](uint64_t key, uint32_t count, const float* w, const float* st) {
        const uint32_t row = b->Find(key);
        ASSERT_NE(row, ShardStore::kNoRow);
        EXPECT_EQ(b->Count(row), count);
        EXPECT_EQ(std::memcmp(b->Weights(row), w, a->dim() * sizeof(float)), 0);
        EXPECT_EQ(std::memcmp(b->State(row), st, a->state_floats() * sizeof(float)), 0);
      });
    }
  }
  // Flips one byte in the middle of a file (same size: only the checksum can tell).
  static void Garble(const std::string& path) {
    std::string data = test::ReadFile(path);
    ASSERT_GT(data.size(), 200u);
    data[data.size() / 2] ^= 0x5a;
    test::WriteFile(path, data);
  }

  std::unique_ptr<LaneHandler> lane1_;
};

TEST_F(LoadTest, SameShardCountReadsOnlyTheLanesOwnParts) {
  test::TempDir dir;
  WriteCheckpoint(dir.path());
  // Parts of lane 1's shards are damaged: lane 0 never opens them.
  Garble(dir.path() + "/a/part-00001-of-00004.emb.npy");
  std::filesystem::remove(dir.path() + "/a/part-00003-of-00004.state.npy");
  LaneHandler fresh(tables_, placement_, 0, 0, 1000);
  wire::ReplyHeader rh = Load(fresh, dir.path());
  ASSERT_EQ(rh.code(), wire::OK) << rh.error();
  EXPECT_EQ(rh.loaded_rows(), 2 * 3000u + 20000u);
  ExpectSameRows(*lane0_, fresh, 0, 4);
  ExpectSameRows(*lane0_, fresh, 1, 1);

  // Lane 1 reads them and refuses, naming the file.
  LaneHandler fresh1(tables_, placement_, 0, 1, 1000);
  rh = Load(fresh1, dir.path());
  EXPECT_NE(rh.code(), wire::OK);
  EXPECT_NE(rh.error().find("part-00003-of-00004.state.npy"), std::string::npos) << rh.error();
}

TEST_F(LoadTest, StreamingVerifiesChecksums) {
  test::TempDir dir;
  WriteCheckpoint(dir.path());
  {
    LaneHandler fresh(tables_, placement_, 0, 1, 1000);
    wire::ReplyHeader rh = Load(fresh, dir.path());
    ASSERT_EQ(rh.code(), wire::OK) << rh.error();
    EXPECT_EQ(rh.loaded_rows(), 2 * 3000u);
    ExpectSameRows(*lane1_, fresh, 0, 4);
  }
  // A flipped byte in the middle of lane 0's part of table b (in its second piece).
  Garble(dir.path() + "/b/part-00000-of-00001.emb.npy");
  LaneHandler fresh(tables_, placement_, 0, 0, 1000);
  wire::ReplyHeader rh = Load(fresh, dir.path());
  EXPECT_NE(rh.code(), wire::OK);
  EXPECT_NE(rh.error().find("b/part-00000-of-00001.emb.npy: checksum mismatch"), std::string::npos)
      << rh.error();
}

TEST_F(LoadTest, OtherShardCountReadsEveryPartOnceAndFilters) {
  test::TempDir dir;
  WriteCheckpoint(dir.path());
  // Table a with 3 shards instead of 4, split over the two lanes of the server.
  config::TrainConfig cfg = cfg_;
  cfg.mutable_tables(0)->set_shards(3);
  std::vector<TableSpec> tables;
  for (const auto& t : cfg.tables()) tables.emplace_back(t);
  Placement one(cfg, {2});
  LaneHandler l0(tables, one, 0, 0, 1000), l1(tables, one, 0, 1, 1000);
  uint64_t loaded = 0;
  for (LaneHandler* lane : {&l0, &l1}) {
    wire::ReplyHeader rh = Load(*lane, dir.path());
    ASSERT_EQ(rh.code(), wire::OK) << rh.error();
    loaded += rh.loaded_rows();
  }
  EXPECT_EQ(loaded, 4 * 3000u + 20000u);
  for (uint32_t s = 0; s < 3; ++s) {
    ShardStore* store = l0.store(0, s) != nullptr ? l0.store(0, s) : l1.store(0, s);
    ASSERT_NE(store, nullptr);
    EXPECT_GT(store->size(), 3000u);
    store->ForEachRow([&](uint64_t key, uint32_t count, const float* w, const float*) {
      EXPECT_EQ(ShardOf(key, 3), s);
      EXPECT_EQ(count, key % 1000);
      EXPECT_EQ(w[1], static_cast<float>(key) + 0.25f);
    });
  }
  // Every part is read: a damaged one fails the lanes that serve table a.
  Garble(dir.path() + "/a/part-00001-of-00004.count.npy");
  LaneHandler again(tables, one, 0, 0, 1000);
  wire::ReplyHeader rh = Load(again, dir.path());
  EXPECT_NE(rh.code(), wire::OK);
  EXPECT_NE(rh.error().find("a/part-00001-of-00004.count.npy: checksum mismatch"),
            std::string::npos)
      << rh.error();
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

// ---- ps.memory_limit_bytes ----------------------------------------------------------

// One lane, two one-shard tables without row caps: "f" (when_full: FAIL) and "s"
// (SKIP_NEW), under a server memory budget of 200 kB.
TEST(MemoryBudgetTest, RefusesOrSkipsPastTheBudgetAndNeverExceedsIt) {
  const auto cfg = test::MustParse(R"pb(
    tables { name: "f" dim: 2 }
    tables { name: "s" dim: 2 when_full: SKIP_NEW }
  )pb");
  Placement placement(cfg, {1});
  std::vector<TableSpec> tables;
  for (const auto& t : cfg.tables()) tables.emplace_back(t);
  MemoryBudget budget;
  budget.limit = 200000;
  LaneHandler lane(tables, placement, 0, 0, 100000, &budget);
  auto push_counts = [&](uint32_t table, uint64_t first, uint64_t n) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(wire::PUSH_COUNTS);
    wire::Segment* seg = h.add_segments();
    seg->set_table(table);
    seg->set_shard(0);
    seg->set_count(n);
    std::vector<uint64_t> keys(n);
    for (uint64_t i = 0; i < n; ++i) keys[i] = first + i;
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    frames.push_back(ArrayFrame<uint64_t>(keys));
    frames.push_back(ArrayFrame<uint32_t>(std::vector<uint32_t>(n, 1)));
    std::vector<zmq::message_t> reply = lane.Handle(frames);
    wire::ReplyHeader rh;
    EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    return rh;
  };
  // FAIL: requests of 500 new rows until one is refused, whole.
  ShardStore* f = lane.store(0, 0);
  bool refused = false;
  for (uint64_t first = 1; first < 100000 && !refused; first += 500) {
    const uint64_t before = f->size();
    wire::ReplyHeader rh = push_counts(0, first, 500);
    EXPECT_LE(budget.used.load(), 200000);
    if (rh.code() == wire::OK) continue;
    refused = true;
    EXPECT_EQ(rh.code(), wire::RESOURCE_EXHAUSTED);
    for (const char* needle : {"table f on server 0", "ps.memory_limit_bytes = 200000",
                               "would add 500 new rows", "when_full: FAIL"})
      EXPECT_NE(rh.error().find(needle), std::string::npos) << needle << ": " << rh.error();
    EXPECT_EQ(f->size(), before) << "a refused request created rows";
  }
  ASSERT_TRUE(refused);
  EXPECT_GT(f->size(), 1000u);
  EXPECT_EQ(budget.used.load(),
            static_cast<int64_t>(f->MemoryBytes() + lane.store(1, 0)->MemoryBytes()));
  // Known rows still take counts.
  EXPECT_EQ(push_counts(0, 1, 500).code(), wire::OK);

  // SKIP_NEW: never refused; its new IDs get no row once the budget is reached.
  ShardStore* s = lane.store(1, 0);
  for (uint64_t first = 1; first < 20000; first += 500) {
    EXPECT_EQ(push_counts(1, first, 500).code(), wire::OK);
    EXPECT_LE(budget.used.load(), 200000);
  }
  EXPECT_LT(s->size(), 19500u);
  wire::RequestHeader h;
  h.set_version(wire::CURRENT_VERSION);
  h.set_op(wire::STATS);
  std::vector<zmq::message_t> frames;
  frames.push_back(EncodeFrame(h));
  std::vector<zmq::message_t> reply = lane.Handle(frames);
  wire::ReplyHeader rh;
  ASSERT_TRUE(DecodeFrame(reply[0], &rh));
  uint64_t skipped = 0;
  for (const auto& st : rh.stats()) skipped += st.skipped_keys();
  EXPECT_GT(skipped, 0u);
  EXPECT_EQ(skipped + s->size(), 20000u);  // keys 1..20000, each sent once
}

TEST(MemoryBudgetTest, DefaultSharesTheHostsAvailableMemory) {
  EXPECT_EQ(MemAvailableBytes("MemTotal:  100 kB\nMemAvailable:    2048 kB\nCached: 1 kB\n"),
            2048u * 1024);
  EXPECT_EQ(MemAvailableBytes("MemTotal: 100 kB\n"), 0u);
  config::PsConfig ps;
  // Two servers and two workers on a host with 40 GB available: 9 GB each.
  EXPECT_EQ(MemoryBudgetBytes(ps, 40000000000ull, 4), 9000000000ull);
  ps.set_memory_limit_bytes(12345);
  EXPECT_EQ(MemoryBudgetBytes(ps, 40000000000ull, 4), 12345u);
}

}  // namespace
}  // namespace din
