// ZeroMQ CURVE between PsClient and PsServer in this process, over loopback TCP: the
// job's client is served; a client with another client key pair, one that trusts
// another server key and one without CURVE are not, and change nothing; the job's
// client keeps working after their attempts.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/net/curve_keys.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::LocalCluster;
using test::PullOne;
using test::PushOne;
using test::SpreadIds;
using test::TempDir;
using test::TotalRows;
using ::testing::HasSubstr;

// How long a refused client waits for a reply before its request fails.
constexpr auto kRefusedTimeout = std::chrono::milliseconds(1500);

config::TrainConfig Config(bool curve, const std::string& key_dir) {
  config::TrainConfig cfg = test::TwoTableConfig();
  if (curve) {
    cfg.mutable_security()->set_curve(true);
    cfg.mutable_security()->set_key_dir(key_dir);
  }
  return cfg;
}

// Replaces `name` in `dir` by the file of the same name in `from` (mode kept: 0600).
void TakeFile(const std::string& from, const std::string& dir, const char* name) {
  std::filesystem::remove(dir + "/" + name);
  std::filesystem::copy_file(from + "/" + name, dir + "/" + name);
}

// A request of a refused client either cannot be sent (the server answered the
// handshake with an error and the connection is gone: UNAVAILABLE) or gets no reply
// (TIMEOUT). Either way it must fail.
Status Outcome(PsClient& client, Result<PsClient::Handle> h) {
  if (!h.ok()) return h.status();
  return client.Wait(*h);
}

void ExpectRefused(PsClient& client, const std::vector<uint64_t>& ids) {
  client.set_timeout(kRefusedTimeout);
  TablePull out;
  PullSpec pull{0, ids, &out};
  Status st = Outcome(client, client.Pull({&pull, 1}, wire::TRAIN));
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.code(), ::testing::AnyOf(StatusCode::kTimeout, StatusCode::kUnavailable))
      << st.ToString();

  std::vector<float> grads(ids.size() * 4, 100.0f);
  PushSpec push{0, ids, grads};
  st = Outcome(client, client.Push({&push, 1}));
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.code(), ::testing::AnyOf(StatusCode::kTimeout, StatusCode::kUnavailable))
      << st.ToString();
}

class CurveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    job_ = tmp_ / "job";
    ASSERT_TRUE(CreateCurveKeyFiles(job_).ok());
  }

  TempDir tmp_{"din_curve_test"};
  std::string job_;
};

TEST_F(CurveTest, OnlyTheJobsClientIsServed) {
  LocalCluster cluster(Config(true, job_), 2, 2);
  ASSERT_NE(cluster.server(0).zap(), nullptr);

  // The job's client: rows start from the initializer and take SGD steps.
  auto client = cluster.Connect();
  const std::vector<uint64_t> ids = SpreadIds(11, 40);
  TablePull first = PullOne(*client, 0, ids);
  ASSERT_EQ(first.values.size(), ids.size() * 4);
  for (float v : first.values) ASSERT_EQ(v, 0.25f);
  PushOne(*client, 0, ids, std::vector<float>(ids.size() * 4, 0.1f));
  TablePull trained = PullOne(*client, 0, ids);
  for (float v : trained.values) ASSERT_FLOAT_EQ(v, 0.25f - 0.5f * 0.1f);
  TablePull emb = PullOne(*client, 1, ids);
  const uint64_t rows = TotalRows(*client);
  ASSERT_EQ(rows, 2 * ids.size());
  const uint64_t admitted = cluster.server(0).zap()->accepted();
  EXPECT_GE(admitted, 2u);  // one per lane of server 0
  EXPECT_EQ(cluster.server(0).zap()->rejected(), 0u);

  // The same IDs plus new ones: a refused request must neither train nor create rows.
  std::vector<uint64_t> attack = ids;
  for (uint64_t id : SpreadIds(7, 20)) attack.push_back(id);

  // (1) CURVE with the right server key but another client key pair: ZAP refuses it.
  const std::string wrong_client = tmp_ / "wrong_client";
  ASSERT_TRUE(CreateCurveKeyFiles(wrong_client).ok());
  TakeFile(job_, wrong_client, kServerPublicKeyFile);
  {
    auto c = PsClient::Connect(Config(true, wrong_client), cluster.peers());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ExpectRefused(**c, attack);
  }
  EXPECT_GE(cluster.server(0).zap()->rejected() + cluster.server(1).zap()->rejected(), 1u);

  // (2) The job's client key pair, but trusting another server key: the handshake
  // fails before ZAP (the server cannot read the client's HELLO).
  const std::string wrong_server = tmp_ / "wrong_server";
  ASSERT_TRUE(CreateCurveKeyFiles(wrong_server).ok());
  TakeFile(job_, wrong_server, kClientPublicKeyFile);
  TakeFile(job_, wrong_server, kClientSecretKeyFile);
  {
    auto c = PsClient::Connect(Config(true, wrong_server), cluster.peers());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ExpectRefused(**c, attack);
  }

  // (3) No CURVE at all.
  {
    auto c = PsClient::Connect(Config(false, ""), cluster.peers());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ExpectRefused(**c, attack);
  }

  // Nothing changed, bit for bit, and no row was created.
  EXPECT_EQ(TotalRows(*client), rows);
  TablePull after = PullOne(*client, 0, ids);
  ASSERT_EQ(after.values.size(), trained.values.size());
  EXPECT_EQ(0, std::memcmp(after.values.data(), trained.values.data(),
                           trained.values.size() * sizeof(float)));
  EXPECT_EQ(after.counts, trained.counts);
  TablePull emb_after = PullOne(*client, 1, ids);
  EXPECT_EQ(0, std::memcmp(emb_after.values.data(), emb.values.data(),
                           emb.values.size() * sizeof(float)));

  // The job's client still trains, and a new one still connects.
  PushOne(*client, 0, ids, std::vector<float>(ids.size() * 4, 0.1f));
  TablePull again = PullOne(*client, 0, ids);
  for (float v : again.values) ASSERT_FLOAT_EQ(v, 0.25f - 2 * 0.5f * 0.1f);
  auto second = cluster.Connect();
  TablePull seen = PullOne(*second, 0, ids);
  EXPECT_EQ(
      0, std::memcmp(seen.values.data(), again.values.data(), again.values.size() * sizeof(float)));
  EXPECT_EQ(TotalRows(*second), rows);
}

TEST_F(CurveTest, ServerAndClientRefuseToStartWithBadKeys) {
  const std::string secret = job_ + "/" + kServerSecretKeyFile;
  ASSERT_EQ(::chmod(secret.c_str(), 0644), 0);
  auto server = PsServer::Create(Config(true, job_), 2);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr(secret));
  EXPECT_THAT(server.status().message(), HasSubstr("0644"));
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);

  LocalCluster cluster(Config(true, job_), 1, 1);
  std::filesystem::remove(job_ + "/" + kClientSecretKeyFile);
  auto client = PsClient::Connect(Config(true, job_), cluster.peers());
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr(job_ + "/" + kClientSecretKeyFile));
}

TEST_F(CurveTest, WithoutCurveNothingChanges) {
  LocalCluster cluster(Config(false, ""), 1, 2);
  EXPECT_EQ(cluster.server(0).zap(), nullptr);
  auto client = cluster.Connect();
  TablePull out = PullOne(*client, 0, SpreadIds(3, 10));
  for (float v : out.values) EXPECT_EQ(v, 0.25f);
}

// Not an assertion: what CURVE costs on loopback, printed as one JSON line. Requests of
// 4,096 distinct IDs of dim 16, one at a time, pull then push.
TEST_F(CurveTest, CostNote) {
  constexpr int kKeys = 4096;
  constexpr int kRequests = 150;
  std::vector<uint64_t> ids = SpreadIds(1, kKeys);
  std::vector<float> grads(ids.size() * 16, 0.001f);
  double secs[2][2];  // [curve][pull, push]
  for (int curve = 0; curve < 2; ++curve) {
    LocalCluster cluster(Config(curve == 1, job_), 1, 2);
    auto client = cluster.Connect();
    PullOne(*client, 1, ids);  // warm up: rows exist, connections are up
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < kRequests; ++r) PullOne(*client, 1, ids);
    auto t1 = std::chrono::steady_clock::now();
    for (int r = 0; r < kRequests; ++r) PushOne(*client, 1, ids, grads);
    auto t2 = std::chrono::steady_clock::now();
    secs[curve][0] = std::chrono::duration<double>(t1 - t0).count();
    secs[curve][1] = std::chrono::duration<double>(t2 - t1).count();
  }
  const double keys = double(kKeys) * kRequests;
  std::printf(
      "{\"bench\":\"curve_cost\",\"keys_per_request\":%d,\"dim\":16,\"requests\":%d,"
      "\"pull_keys_per_s\":%.0f,\"pull_keys_per_s_curve\":%.0f,"
      "\"push_keys_per_s\":%.0f,\"push_keys_per_s_curve\":%.0f}\n",
      kKeys, kRequests, keys / secs[0][0], keys / secs[1][0], keys / secs[0][1], keys / secs[1][1]);
}

}  // namespace
}  // namespace din
