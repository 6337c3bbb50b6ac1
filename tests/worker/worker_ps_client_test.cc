// PsClient against real servers in this process, over loopback TCP; and against fake
// lanes (ROUTER sockets driven by the test) for replies no real server sends: stray,
// late, duplicate and malformed ones, and signals during a wait.
#include "worker/ps_client.h"

#include <signal.h>
#include <sys/time.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/hash.h"
#include "common/net/wire.h"
#include "common/optim/row_initializer.h"
#include "tests/testing/local_cluster.h"

namespace din {
namespace {

using test::LocalCluster;
using test::MustParse;
using test::PullOne;
using test::PushOne;
using test::SpreadIds;
using test::TotalRows;
using test::TwoTableConfig;

TEST(PsClientTest, DedupIndexAndInitialRows) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  std::vector<uint64_t> ids = {5, 9, 5, 1ull << 63, 9, 5, 77};
  TablePull out = PullOne(*client, 1, ids);
  ASSERT_EQ(out.unique_ids, (std::vector<uint64_t>{5, 9, 1ull << 63, 77}));
  EXPECT_EQ(out.index, (std::vector<uint32_t>{0, 1, 0, 2, 1, 0, 3}));
  RowInitializer init(cfg.tables(1).initializer(), cfg.tables(1).seed());
  std::vector<float> expect(16);
  for (size_t u = 0; u < out.unique_ids.size(); ++u) {
    init.Fill(out.unique_ids[u], expect.data(), 16);
    EXPECT_EQ(0, std::memcmp(expect.data(), &out.values[u * 16], 64));
    EXPECT_EQ(out.counts[u], 0u);
  }
  EXPECT_EQ(TotalRows(*client), 4u);
}

TEST(PsClientTest, SgdRoundTripIsExactAndOtherRowsUntouched) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  const auto pushed = SpreadIds(11, 500);
  const auto untouched = SpreadIds(12, 500);
  TablePull before_other = PullOne(*client, 1, untouched);
  PullOne(*client, 0, pushed);
  std::vector<float> grads(pushed.size() * 4);
  for (size_t k = 0; k < grads.size(); ++k) grads[k] = static_cast<float>(k % 13) * 0.0625f - 0.25f;
  PushOne(*client, 0, pushed, grads);
  PushOne(*client, 0, pushed, grads);
  TablePull after = PullOne(*client, 0, pushed);
  for (size_t k = 0; k < grads.size(); ++k) {
    float w = 0.25f;
    w -= 0.5f * grads[k];
    w -= 0.5f * grads[k];
    ASSERT_EQ(after.values[k], w) << k;
  }
  // Adagrad rows that were pulled but never pushed are bit-identical.
  TablePull after_other = PullOne(*client, 1, untouched);
  EXPECT_EQ(0, std::memcmp(before_other.values.data(), after_other.values.data(),
                           before_other.values.size() * sizeof(float)));
}

TEST(PsClientTest, EvaluationPullsCreateNothing) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 1);
  auto client = cluster.Connect();
  PullOne(*client, 1, SpreadIds(1, 100));
  ASSERT_EQ(TotalRows(*client), 100u);
  std::vector<uint64_t> mixed = SpreadIds(1, 10);
  for (uint64_t id : SpreadIds(999, 50)) mixed.push_back(id);
  TablePull eval = PullOne(*client, 1, mixed, wire::EVAL);
  EXPECT_EQ(TotalRows(*client), 100u);
  TablePull train = PullOne(*client, 1, SpreadIds(1, 10));
  for (size_t u = 0; u < eval.unique_ids.size(); ++u) {
    for (int j = 0; j < 16; ++j) {
      const float v = eval.values[u * 16 + j];
      if (u < 10)
        EXPECT_EQ(v, train.values[u * 16 + j]);  // known rows read as they are
      else
        EXPECT_EQ(v, 0.0f);  // unknown rows read as zeros
    }
    if (u >= 10) {
      EXPECT_EQ(eval.counts[u], 0u);
    }
  }
}

TEST(PsClientTest, PushCountsAddToCounts) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 3, 2);
  auto client = cluster.Connect();
  const auto ids = SpreadIds(3, 300);
  std::vector<uint32_t> counts(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) counts[i] = static_cast<uint32_t>(i % 5 + 1);
  for (int round = 0; round < 2; ++round) {
    CountSpec spec{1, ids, counts};
    auto h = client->PushCounts({&spec, 1});
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(client->Wait(*h).ok());
  }
  TablePull out = PullOne(*client, 1, ids);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(out.counts[i], 2 * counts[i]);
}

TEST(PsClientTest, InitialRowsDoNotDependOnShardingOrOrder) {
  auto one = TwoTableConfig();
  auto many = TwoTableConfig();
  many.mutable_tables(1)->set_shards(7);
  LocalCluster a(one, 1, 1), b(many, 3, 2);
  auto ca = a.Connect();
  auto cb = b.Connect();
  auto ids = SpreadIds(5, 1000, 7777);
  TablePull ra = PullOne(*ca, 1, ids);
  std::reverse(ids.begin(), ids.end());
  TablePull rb = PullOne(*cb, 1, ids);
  for (size_t u = 0; u < ra.unique_ids.size(); ++u) {
    const size_t v = ra.unique_ids.size() - 1 - u;
    ASSERT_EQ(ra.unique_ids[u], rb.unique_ids[v]);
    ASSERT_EQ(0, std::memcmp(&ra.values[u * 16], &rb.values[v * 16], 64));
  }
}

// Many shards (a request touches few of them: routing must only visit those), in one
// request with a table of few shards, repeated so that routing state left over from one
// request would corrupt the next; then a request that touches most shards.
TEST(PsClientTest, ManyShardsRouteExactly) {
  const auto cfg = MustParse(test::Table("exact", 4, 16384,
                                         "expected_rows_per_shard: 1 "
                                         "initializer { kind: CONSTANT value: 0.25 } "
                                         "optimizer { sgd { learning_rate: 0.5 } }") +
                             test::Table("emb", 16, 3, "seed: 9 optimizer { adagrad {} }") +
                             "ps { request_timeout_ms: 60000 }\n");
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  for (int round = 0; round < 3; ++round) {
    const auto ids = SpreadIds(100 + round, 300, 7919);
    std::vector<uint64_t> with_repeats = ids;
    with_repeats.insert(with_repeats.end(), ids.begin(), ids.begin() + 50);
    TablePull a, b;
    PullSpec specs[2] = {{0, with_repeats, &a}, {1, ids, &b}};
    auto h = client->Pull(specs, wire::TRAIN);
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(client->Wait(*h).ok());
    ASSERT_EQ(a.unique_ids, ids);
    for (float v : a.values) ASSERT_EQ(v, 0.25f);
    std::vector<float> grads(ids.size() * 4), emb_grads(ids.size() * 16, 0.0f);
    for (size_t k = 0; k < grads.size(); ++k) grads[k] = static_cast<float>(k % 7) * 0.125f;
    PushSpec push[2] = {{1, ids, emb_grads}, {0, ids, grads}};
    auto hp = client->Push(push);
    ASSERT_TRUE(hp.ok());
    ASSERT_TRUE(client->Wait(*hp).ok());
    TablePull after = PullOne(*client, 0, ids);
    for (size_t k = 0; k < grads.size(); ++k) ASSERT_EQ(after.values[k], 0.25f - 0.5f * grads[k]);
  }
  // Thousands of shards at once (the dense path: over 1/16 of the ranks touched).
  const auto wide = SpreadIds(7, 6000, 104729);
  TablePull out = PullOne(*client, 0, wide);
  ASSERT_EQ(out.unique_ids, wide);
  for (float v : out.values) ASSERT_EQ(v, 0.25f);
  EXPECT_EQ(TotalRows(*client), 3 * 300 + 3 * 300 + 6000u);
}

TEST(PsClientTest, SeveralRequestsInFlight) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  const auto a = SpreadIds(1, 2000), b = SpreadIds(2, 3000);
  TablePull ra, rb;
  PullSpec sa{1, a, &ra}, sb{0, b, &rb};
  auto ha = client->Pull({&sa, 1}, wire::TRAIN);
  auto hb = client->Pull({&sb, 1}, wire::TRAIN);
  ASSERT_TRUE(ha.ok() && hb.ok());
  ASSERT_TRUE(client->Wait(*hb).ok());  // out of order
  ASSERT_TRUE(client->Wait(*ha).ok());
  EXPECT_EQ(ra.unique_ids.size(), 2000u);
  for (float v : rb.values) EXPECT_EQ(v, 0.25f);
  // Both tables in one request.
  TablePull c0, c1;
  PullSpec both[] = {{0, b, &c0}, {1, a, &c1}};
  auto hc = client->Pull(both, wire::TRAIN);
  ASSERT_TRUE(hc.ok());
  ASSERT_TRUE(client->Wait(*hc).ok());
  EXPECT_EQ(c0.values, rb.values);
  EXPECT_EQ(c1.values, ra.values);
}

TEST(PsClientTest, ConcurrentPushesOfSameIdsAllLand) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 2);
  const auto ids = SpreadIds(8, 1000);
  constexpr int kRounds = 20;
  // Gradients are multiples of 1/64 and lr = 0.5: every sum is exact in float, so the
  // result must not depend on the order in which the two clients' pushes are applied.
  auto worker = [&](float scale) {
    auto client = cluster.Connect();
    std::vector<float> grads(ids.size() * 4);
    for (size_t k = 0; k < grads.size(); ++k) grads[k] = scale * static_cast<float>(k % 8) / 64.0f;
    for (int r = 0; r < kRounds; ++r) PushOne(*client, 0, ids, grads);
  };
  std::thread t1(worker, 1.0f), t2(worker, -3.0f);
  t1.join();
  t2.join();
  auto client = cluster.Connect();
  TablePull out = PullOne(*client, 0, ids);
  for (size_t k = 0; k < out.values.size(); ++k) {
    const float g = static_cast<float>(k % 8) / 64.0f;
    ASSERT_EQ(out.values[k], 0.25f - 0.5f * kRounds * (g - 3.0f * g)) << k;
  }
}

TEST(PsClientTest, DeadServerGivesTimeoutNamingIt) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 2, 1);
  auto client = cluster.Connect();
  PullOne(*client, 1, SpreadIds(1, 100));
  cluster.server(1).Stop();
  client->set_timeout(std::chrono::milliseconds(300));
  TablePull out;
  const auto ids = SpreadIds(1, 100);
  PullSpec spec{1, ids, &out};
  const auto start = std::chrono::steady_clock::now();
  auto h = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h.ok());
  Status st = client->Wait(*h);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.ToString();
  EXPECT_NE(st.message().find("server 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(cluster.peers()[1].endpoint), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find("server 0"), std::string::npos) << st.message();
  EXPECT_LT(secs, 5.0);
}

TEST(PsClientTest, InputErrorsAreStatuses) {
  const auto cfg = TwoTableConfig();
  LocalCluster cluster(cfg, 1, 1);
  auto client = cluster.Connect();
  const auto ids = SpreadIds(1, 3);
  std::vector<float> grads(5);
  PushSpec bad{0, ids, grads};
  EXPECT_EQ(client->Push({&bad, 1}).status().code(), StatusCode::kInvalidArgument);
  TablePull out;
  PullSpec unknown{9, ids, &out};
  EXPECT_EQ(client->Pull({&unknown, 1}, wire::TRAIN).status().code(), StatusCode::kInvalidArgument);
  PullSpec twice[] = {{0, ids, &out}, {0, ids, &out}};
  EXPECT_EQ(client->Pull(twice, wire::TRAIN).status().code(), StatusCode::kInvalidArgument);
}

// A push the servers refuse reaches the caller with the code the server gave it: an
// invalid request as kInvalidArgument, a full table as kResourceExhausted.
TEST(PsClientTest, RefusedPushKeepsItsCode) {
  auto cfg = TwoTableConfig();
  cfg.mutable_ps()->set_max_request_keys(10);  // the servers' limit; the client sends more
  cfg.mutable_tables(1)->set_max_rows_per_shard(5);
  cfg.mutable_tables(1)->set_shards(1);
  LocalCluster cluster(cfg, 1, 1);
  auto client = cluster.Connect();
  auto push = [&](int table, const std::vector<uint64_t>& ids) {
    std::vector<float> grads(ids.size() * cfg.tables(table).dim(), 0.125f);
    PushSpec spec{table, ids, grads};
    auto h = client->Push({&spec, 1});
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? client->Wait(*h) : h.status();
  };
  Status st = push(0, SpreadIds(1, 11));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_THAT(st.message(), ::testing::HasSubstr("refused PUSH request"));
  EXPECT_THAT(st.message(), ::testing::HasSubstr("ps.max_request_keys = 10"));
  st = push(1, SpreadIds(1, 6));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_THAT(st.message(), ::testing::HasSubstr("is full"));
  EXPECT_TRUE(push(1, SpreadIds(1, 5)).ok());
}

// ---- Against fake lanes -------------------------------------------------------------

// One server with two lanes, each a ROUTER socket of the test; table x has one shard
// on each lane.
constexpr char kFakeConfig[] = R"pb(
  tables { name: "x" dim: 2 shards: 2 }
  ps { request_timeout_ms: 10000 }
)pb";

class FakeLanes {
 public:
  struct Request {
    std::string identity;
    wire::RequestHeader header;
    std::vector<uint64_t> keys;
  };

  FakeLanes() {
    for (int l = 0; l < 2; ++l) {
      routers_.emplace_back(ctx_, zmq::socket_type::router);
      routers_[l].set(zmq::sockopt::linger, 0);
      routers_[l].set(zmq::sockopt::rcvtimeo, 10000);
      routers_[l].bind("tcp://127.0.0.1:*");
      endpoints_.push_back(routers_[l].get(zmq::sockopt::last_endpoint));
    }
  }
  std::unique_ptr<PsClient> Connect(const config::TrainConfig& cfg) {
    std::vector<PeerInfo> peers = {
        PeerInfo{Role::kServer, 0, 0, "localhost", JoinEndpoints(endpoints_)}};
    auto client = PsClient::Connect(cfg, peers);
    CHECK(client.ok()) << client.status().ToString();
    return std::move(*client);
  }
  // The next request lane `l` received (fails the test after 10 s without one).
  Request Receive(int l) {
    std::vector<zmq::message_t> frames;
    CHECK(zmq::recv_multipart(routers_[l], std::back_inserter(frames))) << "no request";
    Request r;
    r.identity = frames[0].to_string();
    CHECK(frames.size() >= 2 && DecodeFrame(frames[1], &r.header));
    if (frames.size() > 2) {
      r.keys.resize(frames[2].size() / sizeof(uint64_t));
      std::memcpy(r.keys.data(), frames[2].data(), frames[2].size());
    }
    return r;
  }
  void Send(int l, const Request& to, const std::vector<std::string>& frames) {
    routers_[l].send(zmq::buffer(to.identity), zmq::send_flags::sndmore);
    for (size_t i = 0; i < frames.size(); ++i)
      routers_[l].send(zmq::buffer(frames[i]),
                       i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  // An OK pull reply to `r` under request id `id`: key k reads (key + tag, key + tag) with
  // count tag.
  static std::vector<std::string> PullReply(const Request& r, uint64_t id, float tag) {
    wire::ReplyHeader rh;
    rh.set_version(wire::CURRENT_VERSION);
    rh.set_request_id(id);
    std::vector<float> values;
    for (uint64_t k : r.keys) values.insert(values.end(), 2, static_cast<float>(k) + tag);
    const std::vector<uint32_t> counts(r.keys.size(), static_cast<uint32_t>(tag));
    return {rh.SerializeAsString(),
            std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4),
            std::string(reinterpret_cast<const char*>(counts.data()), counts.size() * 4)};
  }

 private:
  zmq::context_t ctx_;
  std::vector<zmq::socket_t> routers_;
  std::vector<std::string> endpoints_;
};

// IDs of table x with keys on both shards.
std::vector<uint64_t> FakeIds() {
  std::vector<uint64_t> ids = SpreadIds(3, 8, 7919);
  bool shard[2] = {false, false};
  for (uint64_t id : ids) shard[ShardOf(id, 2)] = true;
  CHECK(shard[0] && shard[1]);
  return ids;
}

// Every row of `out` reads as written by PullReply(..., tag).
void ExpectRows(const TablePull& out, float tag) {
  for (size_t u = 0; u < out.unique_ids.size(); ++u) {
    EXPECT_EQ(out.values[2 * u], static_cast<float>(out.unique_ids[u]) + tag) << u;
    EXPECT_EQ(out.values[2 * u + 1], static_cast<float>(out.unique_ids[u]) + tag) << u;
    EXPECT_EQ(out.counts[u], static_cast<uint32_t>(tag)) << u;
  }
}

TEST(PsClientFakeLaneTest, StrayDuplicateAndLateRepliesAreIgnored) {
  FakeLanes lanes;
  const auto cfg = MustParse(kFakeConfig);
  auto client = lanes.Connect(cfg);
  const auto ids = FakeIds();

  // A reply to a request id never sent, then the real one, then a second reply from the
  // same lane while the request still waits for the other lane: only the real one counts.
  TablePull first;
  PullSpec spec{0, ids, &first};
  auto h = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h.ok());
  FakeLanes::Request r0 = lanes.Receive(0), r1 = lanes.Receive(1);
  ASSERT_EQ(r0.header.request_id(), *h);
  lanes.Send(0, r0, FakeLanes::PullReply(r0, *h + 1000, 9));
  lanes.Send(0, r0, FakeLanes::PullReply(r0, *h, 1));
  lanes.Send(0, r0, FakeLanes::PullReply(r0, *h, 2));
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    lanes.Send(1, r1, FakeLanes::PullReply(r1, *h, 1));
  });
  const Status st = client->Wait(*h);
  late.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExpectRows(first, 1);

  // A request that times out; its replies, arriving during the next request, write
  // nothing into its outputs and do not complete the next one.
  client->set_timeout(std::chrono::milliseconds(200));
  TablePull timed_out;
  spec.out = &timed_out;
  auto h2 = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h2.ok());
  FakeLanes::Request t0 = lanes.Receive(0), t1 = lanes.Receive(1);
  EXPECT_EQ(client->Wait(*h2).code(), StatusCode::kTimeout);
  const std::vector<float> unwritten = timed_out.values;
  client->set_timeout(std::chrono::milliseconds(10000));
  TablePull next;
  spec.out = &next;
  auto h3 = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h3.ok());
  FakeLanes::Request n0 = lanes.Receive(0), n1 = lanes.Receive(1);
  lanes.Send(0, t0, FakeLanes::PullReply(t0, *h2, 5));
  lanes.Send(1, t1, FakeLanes::PullReply(t1, *h2, 5));
  lanes.Send(0, n0, FakeLanes::PullReply(n0, *h3, 3));
  lanes.Send(1, n1, FakeLanes::PullReply(n1, *h3, 3));
  ASSERT_TRUE(client->Wait(*h3).ok());
  ExpectRows(next, 3);
  EXPECT_EQ(timed_out.values, unwritten);
}

TEST(PsClientFakeLaneTest, MalformedReplyHeaderIsAnError) {
  FakeLanes lanes;
  auto client = lanes.Connect(MustParse(kFakeConfig));
  const auto ids = FakeIds();
  TablePull out;
  PullSpec spec{0, ids, &out};
  auto h = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h.ok());
  FakeLanes::Request r0 = lanes.Receive(0);
  lanes.Send(0, r0, {"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"});
  const Status st = client->Wait(*h);
  EXPECT_EQ(st.code(), StatusCode::kInternal) << st.ToString();
  EXPECT_THAT(st.message(), ::testing::HasSubstr("malformed reply from server 0"));
  EXPECT_THAT(st.message(), ::testing::HasSubstr("lane 0"));
}

void OnAlarm(int) {}

// Signals arriving while Wait() polls (a profiler's or a watchdog's timer) neither end
// the wait nor shorten its deadline.
TEST(PsClientFakeLaneTest, WaitGoesOnThroughSignals) {
  // Every thread but this one (ZeroMQ's, the replying one) blocks SIGALRM, so that the
  // alarms interrupt this thread's poll.
  sigset_t alarm, old_mask;
  sigemptyset(&alarm);
  sigaddset(&alarm, SIGALRM);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &alarm, &old_mask), 0);
  FakeLanes lanes;
  auto client = lanes.Connect(MustParse(kFakeConfig));
  const auto ids = FakeIds();
  TablePull out;
  PullSpec spec{0, ids, &out};
  auto h = client->Pull({&spec, 1}, wire::TRAIN);
  ASSERT_TRUE(h.ok());
  FakeLanes::Request r0 = lanes.Receive(0), r1 = lanes.Receive(1);
  std::thread replier([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    lanes.Send(0, r0, FakeLanes::PullReply(r0, *h, 4));
    lanes.Send(1, r1, FakeLanes::PullReply(r1, *h, 4));
  });

  struct sigaction action = {}, old_action;
  action.sa_handler = OnAlarm;  // no SA_RESTART: a blocking call returns EINTR
  sigemptyset(&action.sa_mask);
  ASSERT_EQ(sigaction(SIGALRM, &action, &old_action), 0);
  itimerval every_2ms = {{0, 2000}, {0, 2000}}, off = {};
  ASSERT_EQ(setitimer(ITIMER_REAL, &every_2ms, nullptr), 0);
  ASSERT_EQ(pthread_sigmask(SIG_UNBLOCK, &alarm, nullptr), 0);
  const Status st = client->Wait(*h);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &alarm, nullptr), 0);
  setitimer(ITIMER_REAL, &off, nullptr);
  replier.join();
  sigaction(SIGALRM, &old_action, nullptr);
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExpectRows(out, 4);
}

}  // namespace
}  // namespace din
