// PsClient against real servers in this process, over loopback TCP.
#include "worker/ps_client.h"

#include <chrono>
#include <cstring>
#include <thread>

#include <gtest/gtest.h>

#include "common/optim/row_initializer.h"
#include "tests/ps/local_cluster.h"

namespace din {
namespace {

using testing::LocalCluster;
using testing::MustParse;
using testing::PullOne;
using testing::PushOne;
using testing::TotalRows;

constexpr char kConfig[] = R"pb(
  tables {
    name: "exact"
    dim: 4
    shards: 5
    initializer { kind: CONSTANT value: 0.25 }
    optimizer { sgd { learning_rate: 0.5 } }
  }
  tables {
    name: "emb"
    dim: 16
    shards: 3
    seed: 9
    optimizer { adagrad {} }
  }
  ps { request_timeout_ms: 10000 }
)pb";

std::vector<uint64_t> Ids(uint64_t base, int n, uint64_t stride = 1000003) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(base + stride * i);
  return ids;
}

TEST(PsClientTest, DedupIndexAndInitialRows) {
  const auto cfg = MustParse(kConfig);
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  const auto pushed = Ids(11, 500);
  const auto untouched = Ids(12, 500);
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 2, 1);
  auto client = cluster.Connect();
  PullOne(*client, 1, Ids(1, 100));
  ASSERT_EQ(TotalRows(*client), 100u);
  std::vector<uint64_t> mixed = Ids(1, 10);
  for (uint64_t id : Ids(999, 50)) mixed.push_back(id);
  TablePull eval = PullOne(*client, 1, mixed, wire::EVAL);
  EXPECT_EQ(TotalRows(*client), 100u);
  TablePull train = PullOne(*client, 1, Ids(1, 10));
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 3, 2);
  auto client = cluster.Connect();
  const auto ids = Ids(3, 300);
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
  auto one = MustParse(kConfig);
  auto many = MustParse(kConfig);
  many.mutable_tables(1)->set_shards(7);
  LocalCluster a(one, 1, 1), b(many, 3, 2);
  auto ca = a.Connect();
  auto cb = b.Connect();
  auto ids = Ids(5, 1000, 7777);
  TablePull ra = PullOne(*ca, 1, ids);
  std::reverse(ids.begin(), ids.end());
  TablePull rb = PullOne(*cb, 1, ids);
  for (size_t u = 0; u < ra.unique_ids.size(); ++u) {
    const size_t v = ra.unique_ids.size() - 1 - u;
    ASSERT_EQ(ra.unique_ids[u], rb.unique_ids[v]);
    ASSERT_EQ(0, std::memcmp(&ra.values[u * 16], &rb.values[v * 16], 64));
  }
}

TEST(PsClientTest, SeveralRequestsInFlight) {
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 2, 2);
  auto client = cluster.Connect();
  const auto a = Ids(1, 2000), b = Ids(2, 3000);
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 2, 2);
  const auto ids = Ids(8, 1000);
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 2, 1);
  auto client = cluster.Connect();
  PullOne(*client, 1, Ids(1, 100));
  cluster.server(1).Stop();
  client->set_timeout(std::chrono::milliseconds(300));
  TablePull out;
  const auto ids = Ids(1, 100);
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
  const auto cfg = MustParse(kConfig);
  LocalCluster cluster(cfg, 1, 1);
  auto client = cluster.Connect();
  const auto ids = Ids(1, 3);
  std::vector<float> grads(5);
  PushSpec bad{0, ids, grads};
  EXPECT_EQ(client->Push({&bad, 1}).status().code(), StatusCode::kInvalidArgument);
  TablePull out;
  PullSpec unknown{9, ids, &out};
  EXPECT_EQ(client->Pull({&unknown, 1}, wire::TRAIN).status().code(), StatusCode::kInvalidArgument);
  PullSpec twice[] = {{0, ids, &out}, {0, ids, &out}};
  EXPECT_EQ(client->Pull(twice, wire::TRAIN).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace din
