// Synchronous steps on one lane (LaneHandler::Process, docs/design.md §10): pushes are
// held until every worker of the step has arrived, then summed per key in worker order,
// divided by the step's samples, given the MBA term once per distinct key and applied
// with one optimizer step per row; all replies are released together.
#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "common/hash.h"
#include "common/net/wire.h"
#include "common/optim/row_initializer.h"
#include "ps/lane_handler.h"
#include "tests/testing/local_cluster.h"

namespace din {
namespace {

// One table served entirely by lane 0 (one shard, one lane): SGD with learning rate 0.5
// and an MBA term, so a step's effect can be written out by hand.
constexpr char kConfig[] = R"pb(
  tables {
    name: "a"
    dim: 2
    shards: 1
    initializer { kind: NORMAL stddev: 0.3 }
    optimizer { sgd { learning_rate: 0.5 } }
    mba_lambda: 0.25
  }
)pb";

constexpr float kLr = 0.5f, kLambda = 0.25f;

class SyncStepTest : public ::testing::Test {
 protected:
  SyncStepTest() : cfg_(test::MustParse(kConfig)), placement_(cfg_, {1}) {
    for (const auto& t : cfg_.tables()) tables_.emplace_back(t);
    lane_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 0, 1000);
  }

  static std::vector<zmq::message_t> Frames(wire::Op op, const std::vector<uint64_t>& keys,
                                            const std::vector<std::byte>& payload,
                                            const wire::SyncStep* sync, uint64_t request_id) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(op);
    h.set_request_id(request_id);
    if (!keys.empty()) {
      wire::Segment* s = h.add_segments();
      s->set_table(0);
      s->set_shard(0);
      s->set_count(keys.size());
    }
    if (sync != nullptr) *h.mutable_sync() = *sync;
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    frames.push_back(ArrayFrame<uint64_t>(keys));
    if (op != wire::PULL) frames.emplace_back(payload.data(), payload.size());
    return frames;
  }
  template <typename T>
  static std::vector<std::byte> Bytes(const std::vector<T>& v) {
    const auto* p = reinterpret_cast<const std::byte*>(v.data());
    return {p, p + v.size() * sizeof(T)};
  }
  static wire::SyncStep Step(uint64_t step, uint32_t worker, uint32_t workers, uint64_t samples) {
    wire::SyncStep s;
    s.set_step(step);
    s.set_worker(worker);
    s.set_workers(workers);
    s.set_samples(samples);
    return s;
  }
  LaneHandler::Outcome Push(const std::vector<uint64_t>& keys, const std::vector<float>& sums,
                            const wire::SyncStep& sync, uint64_t request_id = 1) {
    auto frames = Frames(wire::PUSH, keys, Bytes(sums), &sync, request_id);
    return lane_->Process(frames);
  }
  static wire::ReplyHeader Decode(const std::vector<zmq::message_t>& reply) {
    wire::ReplyHeader rh;
    EXPECT_FALSE(reply.empty());
    if (!reply.empty()) {
      EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    }
    return rh;
  }
  void Count(const std::vector<uint64_t>& keys, const std::vector<uint32_t>& n) {
    auto frames = Frames(wire::PUSH_COUNTS, keys, Bytes(n), nullptr, 9);
    ASSERT_EQ(Decode(lane_->Process(frames).reply).code(), wire::OK);
  }
  // The row of `key` as stored (created with its initial value on first sight).
  std::vector<float> Row(uint64_t key) {
    auto frames = Frames(wire::PULL, {key}, {}, nullptr, 8);
    auto out = lane_->Process(frames);
    EXPECT_EQ(Decode(out.reply).code(), wire::OK);
    std::vector<float> row(2);
    std::memcpy(row.data(), out.reply[1].data(), sizeof(float) * 2);
    return row;
  }

  config::TrainConfig cfg_;
  Placement placement_;
  std::vector<TableSpec> tables_;
  std::unique_ptr<LaneHandler> lane_;
};

TEST_F(SyncStepTest, HoldsUntilEveryWorkerThenAppliesTheGlobalMeanOnce) {
  // Key 10 is in both workers' shares, 11 only in worker 0's, 12 only in worker 1's.
  Count({10, 11, 12}, {5, 2, 1});
  const std::map<uint64_t, std::vector<float>> before = {
      {10, Row(10)}, {11, Row(11)}, {12, Row(12)}};
  // Sums over each worker's samples (3 and 5 samples).
  const std::vector<float> g0 = {0.3f, -0.6f, 0.9f, 0.12f};  // keys 10, 11
  const std::vector<float> g1 = {1.5f, 0.5f, -0.25f, 2.0f};  // keys 12, 10

  LaneHandler::Outcome first = Push({10, 11}, g0, Step(0, 0, 2, 3), 101);
  EXPECT_TRUE(first.reply.empty()) << "the first push of two is held";
  EXPECT_EQ(first.held_slot, 0);
  EXPECT_TRUE(first.released.empty());
  EXPECT_EQ(Row(10), before.at(10)) << "nothing applied before the step is complete";

  LaneHandler::Outcome second = Push({12, 10}, g1, Step(0, 1, 2, 5), 202);
  EXPECT_TRUE(second.reply.empty());
  EXPECT_EQ(second.held_slot, 1);
  ASSERT_EQ(second.released.size(), 2u);
  std::map<int, uint64_t> ids;
  for (const auto& [slot, reply] : second.released) {
    const wire::ReplyHeader rh = Decode(reply);
    EXPECT_EQ(rh.code(), wire::OK);
    ids[slot] = rh.request_id();
  }
  EXPECT_EQ(ids[0], 101u);
  EXPECT_EQ(ids[1], 202u);

  // One SGD step per key: w - lr * (sum / 8 samples + lambda * w / n).
  const std::map<uint64_t, std::vector<float>> sums = {
      {10, {0.3f + -0.25f, -0.6f + 2.0f}}, {11, {0.9f, 0.12f}}, {12, {1.5f, 0.5f}}};
  const std::map<uint64_t, float> n = {{10, 5}, {11, 2}, {12, 1}};
  for (const auto& [key, sum] : sums) {
    const std::vector<float> after = Row(key);
    for (int j = 0; j < 2; ++j) {
      const float w = before.at(key)[j];
      EXPECT_FLOAT_EQ(after[j], w - kLr * (sum[j] / 8.0f + kLambda * w / n.at(key)))
          << "key " << key << " coordinate " << j;
    }
  }
}

TEST_F(SyncStepTest, ArrivalOrderDoesNotChangeTheResult) {
  // Float addition is not associative here: (1e8 + 1) - 1e8 = 0 but (1e8 - 1e8) + 1 = 1,
  // so summing in arrival order would give different rows.
  const std::vector<float> g0 = {1e8f, 0.1f, 3.0f, 0.4f}, g1 = {1.0f, 0.7f, 1e-7f, 1e8f},
                           g2 = {-1e8f, 0.3f, 1.1f, -1e8f};
  std::vector<std::vector<float>> results;
  for (const std::vector<int>& order : {std::vector<int>{0, 1, 2}, {2, 0, 1}, {1, 2, 0}}) {
    lane_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 0, 1000);
    const std::vector<float>* g[] = {&g0, &g1, &g2};
    for (int w : order) Push({20, 21}, *g[w], Step(0, w, 3, 4));
    std::vector<float> rows = Row(20);
    const auto r21 = Row(21);
    rows.insert(rows.end(), r21.begin(), r21.end());
    results.push_back(rows);
  }
  EXPECT_EQ(results[0], results[1]) << "bit for bit: summed in worker order";
  EXPECT_EQ(results[0], results[2]);
}

TEST_F(SyncStepTest, AWorkerWithoutKeysOrSamplesStillCompletesTheStep) {
  const auto before = Row(30);
  EXPECT_TRUE(Push({30}, {0.8f, -0.8f}, Step(4, 1, 2, 2)).reply.empty());
  auto done = Push({}, {}, Step(4, 0, 2, 0));
  ASSERT_EQ(done.released.size(), 2u);
  const auto after = Row(30);
  // n = 0 (never counted) is taken as 1.
  for (int j = 0; j < 2; ++j)
    EXPECT_FLOAT_EQ(after[j], before[j] - kLr * ((j ? -0.8f : 0.8f) / 2 + kLambda * before[j]));
  // A step in which no worker had samples changes nothing.
  Push({}, {}, Step(5, 0, 2, 0));
  EXPECT_EQ(Push({}, {}, Step(5, 1, 2, 0)).released.size(), 2u);
  EXPECT_EQ(Row(30), after);
}

TEST_F(SyncStepTest, RefusesInconsistentPushesAndChangesNothing) {
  const auto before = Row(40);
  auto rejected = [&](LaneHandler::Outcome out, const std::string& needle) {
    ASSERT_FALSE(out.reply.empty()) << "answered at once, not held";
    EXPECT_EQ(out.held_slot, -1);
    const wire::ReplyHeader rh = Decode(out.reply);
    EXPECT_EQ(rh.code(), wire::INVALID_REQUEST);
    EXPECT_NE(rh.error().find(needle), std::string::npos) << rh.error();
  };
  rejected(Push({40}, {1, 1}, Step(0, 0, 0, 1)), "workers must be in 1..");
  rejected(Push({40}, {1, 1}, Step(0, 2, 2, 1)), "worker 2 of 2");
  EXPECT_TRUE(Push({40}, {1, 1}, Step(7, 0, 2, 1)).reply.empty());
  rejected(Push({40}, {1, 1}, Step(7, 0, 2, 1)), "worker 0 already pushed step 7");
  rejected(Push({40}, {1, 1}, Step(8, 1, 2, 1)), "while step 7 of 2 workers is being gathered");
  rejected(Push({40}, {1, 1}, Step(7, 1, 3, 1)), "while step 7 of 2 workers is being gathered");
  {
    wire::SyncStep s = Step(7, 1, 2, 1);
    auto frames = Frames(wire::PULL, {40}, {}, &s, 5);
    rejected(lane_->Process(frames), "only valid on PUSH");
  }
  EXPECT_EQ(Row(40), before) << "still held: nothing applied";
  EXPECT_EQ(lane_->sync_arrived(), 1u);
  EXPECT_EQ(Push({40}, {1, 1}, Step(7, 1, 2, 1)).released.size(), 2u);
  EXPECT_NE(Row(40), before);
  rejected(Push({40}, {1, 1}, Step(7, 0, 2, 1)), "has already applied");
}

}  // namespace
}  // namespace din
