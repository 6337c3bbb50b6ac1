// Fuzzes how a worker's PsClient decodes server replies. A fake lane (a ZeroMQ ROUTER on
// loopback) answers each client request with the fuzz reply (frames from fuzz_input.h),
// queued before the client even sends, followed by a well-formed one when the model
// below says the fuzz reply leaves the request open; so every request completes at once
// (a wrong model shows as a timeout error).
//
// The expected outcome is modelled independently of the client: an undecodable header
// is a "malformed reply" error; a reply to another request id is ignored (the
// well-formed reply then completes the request); an error code is passed on (kind
// RESOURCE_EXHAUSTED or INTERNAL); an OK PULL reply with the wrong frames is a
// "malformed pull reply" error, and with the right ones its rows reach the caller (per
// table, as a permutation of the reply's rows); STATS, DUMP and LOAD return what the
// reply carries.
//
// Input: op byte, flags byte (bit 0: give a decodable fuzz header the request's id),
// two id-count bytes, then the reply frames.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <glog/logging.h>
#include <google/protobuf/util/message_differencer.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/config.h"
#include "common/net/cluster.h"
#include "common/net/wire.h"
#include "tests/fuzz/fuzz_input.h"
#include "worker/ps_client.h"

namespace din::fuzz {
namespace {

using google::protobuf::util::MessageDifferencer;

// One server, one lane: every request goes to the one fake lane.
constexpr char kConfig[] = R"pb(
  tables { name: "x" dim: 3 shards: 2 }
  tables { name: "y" dim: 1 shards: 1 }
  ps { threads: 1 request_timeout_ms: 5000 }
)pb";
constexpr uint32_t kDims[2] = {3, 1};
// A new client now and then bounds what requests abandoned on an error leave behind.
constexpr int kRequestsPerClient = 4096;

enum class Op { kPullTrain, kPullEval, kPush, kPushCounts, kStats, kDump, kLoad, kNumOps };

class FakeLane {
 public:
  FakeLane() : cfg_(Parse()), router_(ctx_, zmq::socket_type::router) {
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::rcvtimeo, 20000);
    router_.bind("tcp://127.0.0.1:*");
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  }

  PsClient& client() {
    if (client_ == nullptr || requests_ >= kRequestsPerClient) Reconnect();
    return *client_;
  }
  // The id the client's next request gets (its ids count up from 1).
  uint64_t NextId() const { return next_id_; }
  const config::TrainConfig& cfg() const { return cfg_; }

  void Send(const std::vector<std::string>& frames) {
    router_.send(zmq::buffer(identity_), zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i)
      router_.send(zmq::buffer(frames[i]),
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  // Receives the request the client sent and checks it is the one predicted.
  void ExpectRequest(wire::Op op) {
    std::vector<zmq::message_t> frames;
    CHECK(zmq::recv_multipart(router_, std::back_inserter(frames))) << "no request arrived";
    wire::RequestHeader h;
    CHECK(frames.size() >= 2 && DecodeFrame(frames[1], &h));
    CHECK_EQ(h.request_id(), next_id_);
    CHECK_EQ(h.op(), op);
    ++next_id_;
    ++requests_;
  }

 private:
  static config::TrainConfig Parse() {
    auto cfg = ParseConfig(kConfig, "ps_reply_fuzz");
    CHECK(cfg.ok()) << cfg.status().ToString();
    return *cfg;
  }

  // A fresh client; its first request (answered properly) tells the ROUTER its identity.
  void Reconnect() {
    client_.reset();
    std::vector<PeerInfo> peers = {PeerInfo{Role::kServer, 0, 0, "localhost", endpoint_}};
    auto client = PsClient::Connect(cfg_, peers);
    CHECK(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    next_id_ = 1;
    requests_ = 0;
    const uint64_t id = 9;
    PushSpec spec{1, {&id, 1}, {}};
    const float grad = 0;
    spec.grads = {&grad, 1};
    auto handle = client_->Push({&spec, 1});
    CHECK(handle.ok());
    std::vector<zmq::message_t> frames;
    CHECK(zmq::recv_multipart(router_, std::back_inserter(frames)));
    identity_ = frames[0].to_string();
    wire::ReplyHeader rh;
    rh.set_version(wire::CURRENT_VERSION);
    rh.set_request_id(next_id_++);
    Send({rh.SerializeAsString()});
    CHECK(client_->Wait(*handle).ok());
  }

  const config::TrainConfig cfg_;
  zmq::context_t ctx_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::string identity_;
  std::unique_ptr<PsClient> client_;
  uint64_t next_id_ = 1;
  int requests_ = 0;
};

FakeLane& GetLane() {
  static FakeLane* lane = [] {
    auto* l = new FakeLane();
    // libFuzzer's -timeout watchdog is a periodic SIGALRM. PsClient::Wait goes on after a
    // signal interrupts its poll, but this fake lane's own blocking receives would throw,
    // so the alarm is kept off this thread (ZeroMQ's I/O threads, started above with the
    // signal unblocked, take it).
    sigset_t alarm;
    sigemptyset(&alarm);
    sigaddset(&alarm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alarm, nullptr);
    return l;
  }();
  return *lane;
}

// IDs of table t: n occurrences, about half of them repeats.
std::vector<uint64_t> Ids(int t, int n) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < n; ++i)
    ids.push_back(static_cast<uint64_t>(i % (n / 2 + 1)) * 1000003 + 17 + t);
  return ids;
}

size_t Unique(const std::vector<uint64_t>& ids) {
  return std::set<uint64_t>(ids.begin(), ids.end()).size();
}

// Rows of `values` ([n x dim] floats) as byte strings, sorted.
std::vector<std::string> SortedRows(const char* values, size_t n, uint32_t dim) {
  std::vector<std::string> rows;
  for (size_t i = 0; i < n; ++i) rows.emplace_back(values + i * dim * 4, dim * 4);
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace
}  // namespace din::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  using namespace din::fuzz;
  FuzzInput in(data, size);
  const auto op = static_cast<Op>(in.Byte() % static_cast<int>(Op::kNumOps));
  const uint8_t flags = in.Byte();
  const std::vector<uint64_t> ids[2] = {Ids(0, 1 + in.Byte() % 12), Ids(1, 1 + in.Byte() % 12)};
  std::vector<std::string> frames = SplitFrames(&in, 1, 4);

  FakeLane& lane = GetLane();
  PsClient& client = lane.client();
  const uint64_t id = lane.NextId();

  wire::ReplyHeader fuzz_rh;
  const bool decodable = fuzz_rh.ParseFromString(frames[0]);
  if (decodable && (flags & 1)) {
    fuzz_rh.set_request_id(id);
    frames[0] = fuzz_rh.SerializeAsString();
  }
  const bool pull = op == Op::kPullTrain || op == Op::kPullEval;
  const size_t unique[2] = {Unique(ids[0]), Unique(ids[1])};
  // The well-formed reply: every value 0.5, every count 7.
  wire::ReplyHeader good_rh;
  good_rh.set_version(wire::CURRENT_VERSION);
  good_rh.set_request_id(id);
  std::vector<std::string> good = {good_rh.SerializeAsString()};
  if (pull) {
    const std::vector<float> values(unique[0] * kDims[0] + unique[1] * kDims[1], 0.5f);
    const std::vector<uint32_t> counts(unique[0] + unique[1], 7);
    good.emplace_back(reinterpret_cast<const char*>(values.data()), values.size() * 4);
    good.emplace_back(reinterpret_cast<const char*>(counts.data()), counts.size() * 4);
  }
  // What the client must make of it.
  enum class Outcome { kGood, kFuzz, kMalformed, kRefused } outcome;
  if (!decodable) {
    outcome = Outcome::kMalformed;
  } else if (fuzz_rh.request_id() != id) {
    outcome = Outcome::kGood;
  } else if (fuzz_rh.code() != wire::OK) {
    outcome = Outcome::kRefused;
  } else if (pull && (frames.size() != 3 ||
                      frames[1].size() != 4 * (unique[0] * kDims[0] + unique[1] * kDims[1]) ||
                      frames[2].size() != 4 * (unique[0] + unique[1]))) {
    outcome = Outcome::kMalformed;
  } else {
    outcome = Outcome::kFuzz;
  }
  // The well-formed reply goes only where the fuzz reply leaves the request open: a
  // second reply to a completed request is not part of the protocol.
  lane.Send(frames);
  if (outcome == Outcome::kGood) lane.Send(good);

  Status st;
  TablePull outs[2];
  std::vector<wire::ShardStats> stats;
  std::vector<wire::DumpPart> parts;
  uint64_t loaded = 0;
  wire::Op wire_op = wire::PULL;
  switch (op) {
    case Op::kPullTrain:
    case Op::kPullEval: {
      PullSpec specs[2] = {{0, ids[0], &outs[0]}, {1, ids[1], &outs[1]}};
      auto h = client.Pull(specs, op == Op::kPullTrain ? wire::TRAIN : wire::EVAL);
      CHECK(h.ok());
      st = client.Wait(*h);
      break;
    }
    case Op::kPush: {
      std::vector<uint64_t> u[2];
      std::vector<float> g[2];
      for (int t = 0; t < 2; ++t) {
        std::set<uint64_t> s(ids[t].begin(), ids[t].end());
        u[t].assign(s.begin(), s.end());
        g[t].assign(u[t].size() * kDims[t], 0.25f);
      }
      PushSpec specs[2] = {{0, u[0], g[0]}, {1, u[1], g[1]}};
      auto h = client.Push(specs);
      CHECK(h.ok());
      st = client.Wait(*h);
      wire_op = wire::PUSH;
      break;
    }
    case Op::kPushCounts: {
      std::vector<uint32_t> c[2] = {std::vector<uint32_t>(ids[0].size(), 1),
                                    std::vector<uint32_t>(ids[1].size(), 1)};
      CountSpec specs[2] = {{0, ids[0], c[0]}, {1, ids[1], c[1]}};
      auto h = client.PushCounts(specs);
      CHECK(h.ok());
      st = client.Wait(*h);
      wire_op = wire::PUSH_COUNTS;
      break;
    }
    case Op::kStats: {
      auto r = client.Stats();
      st = r.status();
      if (r.ok()) stats = *r;
      wire_op = wire::STATS;
      break;
    }
    case Op::kDump: {
      auto r = client.Dump("/nonexistent/fuzz-dump");
      st = r.status();
      if (r.ok()) parts = *r;
      wire_op = wire::DUMP;
      break;
    }
    case Op::kLoad:
    case Op::kNumOps: {
      auto r = client.Load("/nonexistent/fuzz-checkpoint");
      st = r.status();
      if (r.ok()) loaded = *r;
      wire_op = wire::LOAD;
      break;
    }
  }
  lane.ExpectRequest(wire_op);

  switch (outcome) {
    case Outcome::kMalformed:
      CHECK(st.code() == StatusCode::kInternal) << st.ToString();
      CHECK(st.message().find("malformed") != std::string::npos) << st.ToString();
      return 0;
    case Outcome::kRefused:
      CHECK(st.code() == (fuzz_rh.code() == wire::RESOURCE_EXHAUSTED
                              ? StatusCode::kResourceExhausted
                              : StatusCode::kInternal))
          << st.ToString();
      return 0;
    case Outcome::kGood:
    case Outcome::kFuzz:
      CHECK(st.ok()) << st.ToString();
      break;
  }
  if (pull) {
    const char* values = outcome == Outcome::kFuzz ? frames[1].data() : good[1].data();
    const char* counts = outcome == Outcome::kFuzz ? frames[2].data() : good[2].data();
    // The reply lists table x's keys first (its shards come first), then y's.
    size_t row = 0, value_bytes = 0;
    for (int t = 0; t < 2; ++t) {
      CHECK_EQ(outs[t].unique_ids.size(), unique[t]);
      CHECK_EQ(outs[t].values.size(), unique[t] * kDims[t]);
      CHECK_EQ(outs[t].index.size(), ids[t].size());
      CHECK(SortedRows(reinterpret_cast<const char*>(outs[t].values.data()), unique[t], kDims[t]) ==
            SortedRows(values + value_bytes, unique[t], kDims[t]))
          << "pulled rows of table " << t << " are not the reply's";
      std::vector<uint32_t> got = outs[t].counts, want(unique[t]);
      std::memcpy(want.data(), counts + row * 4, unique[t] * 4);
      std::sort(got.begin(), got.end());
      std::sort(want.begin(), want.end());
      CHECK(got == want) << "pulled counts of table " << t << " are not the reply's";
      row += unique[t];
      value_bytes += unique[t] * kDims[t] * 4;
    }
  }
  const wire::ReplyHeader& used = outcome == Outcome::kFuzz ? fuzz_rh : good_rh;
  if (op == Op::kStats) {
    CHECK_EQ(stats.size(), static_cast<size_t>(used.stats_size()));
    for (size_t i = 0; i < stats.size(); ++i)
      CHECK(MessageDifferencer::Equals(stats[i], used.stats(static_cast<int>(i))));
  }
  if (op == Op::kDump) CHECK_EQ(parts.size(), static_cast<size_t>(used.dump_parts_size()));
  if (op == Op::kLoad) CHECK_EQ(loaded, used.loaded_rows());
  return 0;
}
