// The half-precision wire (ps.wire_precision, docs/design.md §4): pulled values and
// pushed gradients in FP16 or BF16 between a PsClient and real servers in this process,
// against references computed here from common/half.h's scalar rounding; and the
// refusals: a request with an unknown precision or one that does not fit its frames
// changes nothing, and a reply in another precision than the request asked for is
// refused by the client.
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/half.h"
#include "common/hash.h"
#include "common/net/wire.h"
#include "ps/lane_handler.h"
#include "tests/testing/local_cluster.h"
#include "worker/ps_reply.h"

namespace din {
namespace {

using test::LocalCluster;
using test::PullOne;
using test::PushOne;
using test::SpreadIds;
using ::testing::HasSubstr;

// One table per storage format, SGD with learning rate 1 (a push subtracts the gradient
// as the server received it), random initial rows of ordinary size.
constexpr char kConfig[] = R"pb(
  tables {
    name: "f32"
    dim: 5
    shards: 3
    initializer { kind: NORMAL stddev: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
  tables {
    name: "f16"
    dim: 4
    shards: 2
    storage: FP16
    initializer { kind: NORMAL stddev: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
  tables {
    name: "b16"
    dim: 3
    shards: 1
    storage: BF16
    initializer { kind: NORMAL stddev: 0.5 }
    optimizer { sgd { learning_rate: 1 } }
  }
  ps { request_timeout_ms: 10000 }
)pb";

config::TrainConfig WithWire(config::PsConfig::WirePrecision p) {
  config::TrainConfig cfg = test::MustParse(kConfig);
  cfg.mutable_ps()->set_wire_precision(p);
  return cfg;
}

WeightFormat FormatOf(config::PsConfig::WirePrecision p) {
  return p == config::PsConfig::FP16   ? WeightFormat::kFp16
         : p == config::PsConfig::BF16 ? WeightFormat::kBf16
                                       : WeightFormat::kFp32;
}

// x as the wire carries it: rounded to nearest even by the scalar reference.
float OnWire(float x, WeightFormat f) {
  return f == WeightFormat::kFp32 ? x : HalfToFloat(FloatToHalf(x, f), f);
}

// The power of two FP16 gradients of a push are scaled by, derived here from frexp:
// the largest |g| lands in [2^14, 2^15).
int ScaleExp(const std::vector<float>& grads) {
  float m = 0;
  for (float g : grads) m = std::max(m, std::fabs(g));
  int e;
  std::frexp(m, &e);  // m = f * 2^e, f in [0.5, 1): 2^(e-1) <= m < 2^e
  return 15 - e;
}

// A gradient of the push as the server applies it.
float GradOnWire(float g, WeightFormat f, int scale_exp) {
  if (f != WeightFormat::kFp16) return OnWire(g, f);
  return OnWire(std::ldexp(g, scale_exp), f) * std::ldexp(1.0f, -scale_exp);
}

// Within the rounding of the table's storage format (a half-stored update is rounded
// stochastically to one of the two neighbours of the exact result).
void ExpectStored(float got, float exact, int table, size_t k) {
  if (table == 0) {
    ASSERT_EQ(got, exact) << "table f32 value " << k;
    return;
  }
  const float rel = table == 1 ? std::ldexp(1.0f, -10) : std::ldexp(1.0f, -7);
  ASSERT_LE(std::fabs(got - exact), std::fabs(exact) * rel + 1e-7f)
      << "table " << table << " value " << k << ": " << got << " vs " << exact;
}

class WireRoundTripTest : public ::testing::TestWithParam<config::PsConfig::WirePrecision> {};

TEST_P(WireRoundTripTest, PullAndPushMatchTheScalarRounding) {
  const WeightFormat wire = FormatOf(GetParam());
  // The servers take any precision a request states; the reference client reads the
  // stored values exactly (float32 on the wire).
  LocalCluster cluster(WithWire(config::PsConfig::FP32), 2, 2);
  auto exact = cluster.Connect();
  auto client = PsClient::Connect(WithWire(GetParam()), cluster.peers());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const uint32_t dims[3] = {5, 4, 3};
  for (int t = 0; t < 3; ++t) {
    SCOPED_TRACE("table " + std::to_string(t));
    const std::vector<uint64_t> ids = SpreadIds(100 + t, 300);
    // Pull: every value is the stored one rounded to nearest (stored fp16/bf16 values
    // that are the wire's type pass unchanged, which the rounding of an exact value is).
    TablePull got = PullOne(**client, t, ids);
    TablePull ref = PullOne(*exact, t, ids);
    ASSERT_EQ(got.values.size(), ids.size() * dims[t]);
    for (size_t k = 0; k < got.values.size(); ++k)
      ASSERT_EQ(got.values[k], OnWire(ref.values[k], wire)) << k << ": " << ref.values[k];
    // Push gradients over 26 binades, some tiny: the server applies each as rounded on
    // the wire (FP16: after the request's scaling, so none underflows).
    std::vector<float> grads(got.values.size());
    for (size_t k = 0; k < grads.size(); ++k)
      grads[k] = std::ldexp(1.0f + static_cast<float>(Mix64(k) % 1000) / 999.0f,
                            static_cast<int>(k % 26) - 22) *
                 (k % 3 == 0 ? -1.0f : 1.0f);
    PushOne(**client, t, ids, grads);
    TablePull after = PullOne(*exact, t, ids);
    const int s = ScaleExp(grads);
    for (size_t k = 0; k < grads.size(); ++k) {
      const float g = GradOnWire(grads[k], wire, s);
      // No gradient lost more than the type's rounding: the FP16 scaling keeps the
      // tiny ones out of the subnormals.
      const float rel = wire == WeightFormat::kBf16 ? std::ldexp(1.0f, -8) : std::ldexp(1.0f, -11);
      ASSERT_LE(std::fabs(g - grads[k]), std::fabs(grads[k]) * rel) << k << ": " << grads[k];
      ExpectStored(after.values[k], ref.values[k] - g, t, k);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, WireRoundTripTest,
                         ::testing::Values(config::PsConfig::FP32, config::PsConfig::FP16,
                                           config::PsConfig::BF16),
                         [](const auto& info) {
                           return config::PsConfig::WirePrecision_Name(info.param);
                         });

TEST(WirePrecisionTest, Fp16GradientsAreScaledIntoRange) {
  // Without scaling, gradients past 65504 would arrive as infinity and ones below 2^-24
  // as zero.
  LocalCluster cluster(WithWire(config::PsConfig::FP32), 1, 1);
  auto exact = cluster.Connect();
  auto client = PsClient::Connect(WithWire(config::PsConfig::FP16), cluster.peers());
  ASSERT_TRUE(client.ok());
  for (float g0 : {3e5f, 1e-9f}) {
    const std::vector<uint64_t> ids = SpreadIds(7, 20);
    TablePull before = PullOne(*exact, 0, ids);
    std::vector<float> grads(before.values.size());
    for (size_t k = 0; k < grads.size(); ++k) grads[k] = g0 * (1.0f + 0.01f * k);
    PushOne(**client, 0, ids, grads);
    TablePull after = PullOne(*exact, 0, ids);
    for (size_t k = 0; k < grads.size(); ++k) {
      const float applied = before.values[k] - after.values[k];
      ASSERT_TRUE(std::isfinite(applied)) << g0;
      // w - g in float32 rounds at w's ulp, g's relative error is fp16's.
      ASSERT_NEAR(applied, grads[k],
                  std::fabs(grads[k]) * std::ldexp(1.0f, -10) +
                      std::fabs(before.values[k]) * std::ldexp(1.0f, -23))
          << g0 << " " << k;
    }
  }
}

// Requests straight into one lane.
class WireRefusalTest : public ::testing::Test {
 protected:
  WireRefusalTest() : cfg_(test::MustParse(kConfig)), placement_(cfg_, {1}) {
    for (const auto& t : cfg_.tables()) tables_.emplace_back(t);
    lane_ = std::make_unique<LaneHandler>(tables_, placement_, 0, 0, 1000);
    keys_ = {};
    for (uint64_t k = 1; keys_.size() < 4; ++k)
      if (ShardOf(k, 1) == 0) keys_.push_back(k);
    // Rows exist (a FP32 training pull), so a refused push would visibly change them.
    EXPECT_EQ(Send(Request(wire::PULL, wire::FP32, nullptr)).code(), wire::OK);
    snapshot_ = Weights();
  }

  // A request on table b16 (dim 3, one shard) with the given precision; `grads` as raw
  // bytes (PUSH).
  std::vector<zmq::message_t> Request(wire::Op op, uint32_t precision,
                                      const std::vector<uint8_t>* grads,
                                      std::optional<int> scale_exp = std::nullopt) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(op);
    h.set_request_id(5);
    if (precision != wire::FP32) h.set_precision(precision);
    if (scale_exp) h.set_grad_scale_exp(*scale_exp);
    wire::Segment* s = h.add_segments();
    s->set_table(2);
    s->set_shard(0);
    s->set_count(keys_.size());
    std::vector<zmq::message_t> frames;
    frames.push_back(EncodeFrame(h));
    frames.push_back(ArrayFrame<uint64_t>(keys_));
    if (grads != nullptr) frames.emplace_back(grads->data(), grads->size());
    return frames;
  }
  wire::ReplyHeader Send(std::vector<zmq::message_t> frames,
                         std::vector<zmq::message_t>* reply_out = nullptr) {
    std::vector<zmq::message_t> reply = lane_->Handle(frames);
    wire::ReplyHeader rh;
    EXPECT_TRUE(DecodeFrame(reply[0], &rh));
    if (reply_out != nullptr) *reply_out = std::move(reply);
    return rh;
  }
  std::vector<float> Weights() {
    ShardStore* store = lane_->store(2, 0);
    std::vector<float> w(keys_.size() * 3);
    for (size_t i = 0; i < keys_.size(); ++i) store->GetWeights(store->Find(keys_[i]), &w[i * 3]);
    return w;
  }
  void ExpectRefused(std::vector<zmq::message_t> frames, const std::string& needle) {
    const wire::ReplyHeader rh = Send(std::move(frames));
    EXPECT_EQ(rh.code(), wire::INVALID_REQUEST);
    EXPECT_THAT(rh.error(), HasSubstr(needle));
    EXPECT_EQ(rh.precision(), 0u);
    EXPECT_EQ(Weights(), snapshot_) << "a refused request changed a row";
    EXPECT_EQ(lane_->store(2, 0)->size(), keys_.size()) << "a refused request created a row";
  }

  config::TrainConfig cfg_;
  Placement placement_;
  std::vector<TableSpec> tables_;
  std::unique_ptr<LaneHandler> lane_;
  std::vector<uint64_t> keys_;
  std::vector<float> snapshot_;
};

TEST_F(WireRefusalTest, MalformedPrecisionChangesNothing) {
  const std::vector<uint8_t> half_grads(keys_.size() * 3 * 2, 0x3c);
  const std::vector<uint8_t> float_grads(keys_.size() * 3 * 4, 0x3c);
  ExpectRefused(Request(wire::PULL, 3, nullptr), "unknown wire precision 3 on PULL");
  ExpectRefused(Request(wire::PUSH, 1u << 31, &half_grads), "unknown wire precision 2147483648");
  // A push whose frame is in another precision than its header says.
  ExpectRefused(Request(wire::PUSH, wire::FP16, &float_grads, 0),
                "gradient frame has 48 bytes, expected 24 (FP16)");
  ExpectRefused(Request(wire::PUSH, wire::FP32, &half_grads), "expected 48 (FP32)");
  ExpectRefused(Request(wire::PUSH, wire::BF16, &half_grads, 3),
                "grad_scale_exp is only valid on a PUSH of FP16 gradients");
  ExpectRefused(Request(wire::PUSH, wire::FP16, &half_grads, 121),
                "grad_scale_exp 121 out of range");
  ExpectRefused(Request(wire::PUSH, wire::FP16, &half_grads, -121),
                "grad_scale_exp -121 out of range");
  {
    std::vector<uint8_t> counts(keys_.size() * 4, 1);
    ExpectRefused(Request(wire::PUSH_COUNTS, wire::BF16, &counts),
                  "wire precision BF16 is only valid on PULL and PUSH, not PUSH_COUNTS");
  }
  // The same push, well formed, is applied.
  EXPECT_EQ(Send(Request(wire::PUSH, wire::FP16, &half_grads, -2)).code(), wire::OK);
  EXPECT_NE(Weights(), snapshot_);
}

TEST_F(WireRefusalTest, PullReplySaysItsPrecisionAndCopiesStoredBits) {
  // Table b16 stores bf16: a BF16 pull sends the stored bits; an FP16 pull rounds them.
  ShardStore* store = lane_->store(2, 0);
  for (uint32_t p : {wire::BF16, wire::FP16}) {
    std::vector<zmq::message_t> reply;
    const wire::ReplyHeader rh = Send(Request(wire::PULL, p, nullptr), &reply);
    ASSERT_EQ(rh.code(), wire::OK) << rh.error();
    EXPECT_EQ(rh.precision(), p);
    ASSERT_EQ(reply.size(), 3u);
    ASSERT_EQ(reply[1].size(), keys_.size() * 3 * 2);
    for (size_t i = 0; i < keys_.size(); ++i) {
      const std::byte* stored = store->WeightData(store->Find(keys_[i]));
      for (int j = 0; j < 3; ++j) {
        uint16_t got, bits;
        std::memcpy(&got, static_cast<const char*>(reply[1].data()) + (i * 3 + j) * 2, 2);
        std::memcpy(&bits, stored + j * 2, 2);
        const uint16_t want = p == wire::BF16 ? bits
                                              : FloatToHalf(HalfToFloat(bits, WeightFormat::kBf16),
                                                            WeightFormat::kFp16);
        ASSERT_EQ(got, want) << i << " " << j;
      }
    }
  }
  // FP32 (the default) says nothing: an older client reads it as it always did.
  EXPECT_FALSE(Send(Request(wire::PULL, wire::FP32, nullptr)).has_precision());
}

TEST(WireReplyTest, AReplyInAnotherPrecisionIsRefused) {
  // One key of a dim-2 table; the client asked for FP16 values.
  TablePull out;
  out.unique_ids = {9};
  out.values.assign(2, -1.0f);
  out.counts.assign(1, 0);
  LaneRequest sent;
  sent.segments.push_back({0, 0, 0, 1});
  sent.items = {0};
  ReplyTarget target;
  target.op = wire::PULL;
  target.outs = {&out};
  target.dims = {2};
  target.precision = wire::FP16;
  auto decode = [&](uint32_t precision, size_t value_bytes) {
    wire::ReplyHeader rh;
    rh.set_request_id(3);
    if (precision != wire::FP32) rh.set_precision(precision);
    const std::string header = rh.SerializeAsString();
    const std::string values(value_bytes, '\0');
    const std::string counts(4, '\0');
    const std::vector<std::string_view> frames = {header, values, counts};
    return DecodeReply(rh, frames, sent, target, "server 1 lane 0");
  };
  // A server that answers in float32 (one built before the half wire ignores the field).
  Status st = decode(wire::FP32, 8);
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_THAT(st.message(), HasSubstr("malformed pull reply from server 1 lane 0: values in FP32, "
                                      "the request asked for FP16"));
  st = decode(7, 4);
  EXPECT_THAT(st.message(), HasSubstr("values in precision 7, the request asked for FP16"));
  EXPECT_EQ(out.values, std::vector<float>(2, -1.0f)) << "a refused reply wrote a row";
  // The right precision with the wrong size is malformed too; the right one decodes.
  EXPECT_THAT(decode(wire::FP16, 8).message(), HasSubstr("malformed pull reply"));
  EXPECT_TRUE(decode(wire::FP16, 4).ok());
  EXPECT_EQ(out.values, std::vector<float>(2, 0.0f));
}

}  // namespace
}  // namespace din
