// Servers in the test process, on loopback, for client/server tests without mpirun, and
// the one-request helpers those tests share.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "common/config.h"
#include "common/net/cluster.h"
#include "common/placement.h"
#include "ps/server.h"
#include "tests/testing/config.h"
#include "worker/ps_client.h"

namespace din::test {

// `servers` servers of `lanes` lanes each, started on loopback ports; Connect() gives a
// client of the job.
class LocalCluster {
 public:
  LocalCluster(const config::TrainConfig& cfg, int servers, int lanes) : cfg_(cfg) {
    for (int s = 0; s < servers; ++s) {
      auto server = PsServer::Create(cfg, lanes);
      CHECK(server.ok()) << server.status().ToString();
      peers_.push_back(
          PeerInfo{Role::kServer, s, s, "localhost", JoinEndpoints((*server)->endpoints())});
      servers_.push_back(std::move(*server));
    }
    Placement placement(cfg, LaneCounts(peers_));
    for (int s = 0; s < servers; ++s) servers_[s]->Start(placement, s);
  }

  std::unique_ptr<PsClient> Connect() {
    auto client = PsClient::Connect(cfg_, peers_);
    CHECK(client.ok()) << client.status().ToString();
    return std::move(*client);
  }
  PsServer& server(int s) { return *servers_[s]; }
  const std::vector<PeerInfo>& peers() const { return peers_; }

 private:
  config::TrainConfig cfg_;
  std::vector<PeerInfo> peers_;
  std::vector<std::unique_ptr<PsServer>> servers_;
};

// `n` IDs from `base`, `stride` apart: spread over every shard of a table.
inline std::vector<uint64_t> SpreadIds(uint64_t base, int n, uint64_t stride = 1000003) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(base + stride * i);
  return ids;
}

// Pulls `ids` of one table and waits.
inline TablePull PullOne(PsClient& client, int table, const std::vector<uint64_t>& ids,
                         wire::PullMode mode = wire::TRAIN) {
  TablePull out;
  PullSpec spec{table, ids, &out};
  auto h = client.Pull({&spec, 1}, mode);
  CHECK(h.ok()) << h.status().ToString();
  Status st = client.Wait(*h);
  CHECK(st.ok()) << st.ToString();
  return out;
}

// Pushes `grads` for `ids` of one table and waits.
inline void PushOne(PsClient& client, int table, const std::vector<uint64_t>& ids,
                    const std::vector<float>& grads) {
  PushSpec spec{table, ids, grads};
  auto h = client.Push({&spec, 1});
  CHECK(h.ok()) << h.status().ToString();
  Status st = client.Wait(*h);
  CHECK(st.ok()) << st.ToString();
}

// The rows of every table on every server (STATS).
inline uint64_t TotalRows(PsClient& client) {
  auto stats = client.Stats();
  CHECK(stats.ok()) << stats.status().ToString();
  uint64_t rows = 0;
  for (const auto& s : *stats) rows += s.rows();
  return rows;
}

}  // namespace din::test
