// A live server keeps serving, and computes exactly the same rows, while it is fed random,
// truncated, corrupted and oversized messages (and raw bytes on its TCP ports) during
// real training.
//
// Two clients train disjoint IDs with a deterministic pull -> gradient -> push loop
// (staleness 0), once against a quiet cluster and once while garbage senders hammer every
// lane; the final rows and counts must be bit-identical. Every corrupted message is built
// from a valid request on the training IDs and made invalid in one way the server must
// catch, so a server that applied any of them would change the rows; each gets an
// INVALID_REQUEST reply.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/hash.h"
#include "common/net/wire.h"
#include "tests/testing/local_cluster.h"

namespace din {
namespace {

using test::LocalCluster;
using test::MustParse;

// Two tables: "u" (dim 8, 3 shards, rows from 0.5, SGD) and "i" (dim 4, 2 shards, Adagrad).
config::TrainConfig Config() {
  return MustParse(test::Table("u", 8, 3,
                               "initializer { kind: CONSTANT value: 0.5 } "
                               "optimizer { sgd { learning_rate: 0.25 } }") +
                   test::Table("i", 4, 2, "seed: 3 optimizer { adagrad {} }") +
                   "ps { request_timeout_ms: 60000 max_request_keys: 4096 }\n");
}
constexpr int kLanes = 3;
constexpr int kClients = 2;
constexpr int kRounds = 60;
constexpr int kIdsPerClient = 240;
constexpr uint32_t kDims[2] = {8, 4};

// Client c's IDs: disjoint between clients, so the rows do not depend on how the
// server interleaves their requests.
std::vector<uint64_t> ClientIds(int c) {
  std::vector<uint64_t> ids;
  for (int j = 0; j < kIdsPerClient; ++j)
    ids.push_back(static_cast<uint64_t>(j * kClients + c) * 7919 + 1);
  return ids;
}

// Pull, derive a gradient from what came back, push; counts now and then.
void Train(LocalCluster* cluster, int c) {
  auto client = cluster->Connect();
  const std::vector<uint64_t> ids = ClientIds(c);
  for (int round = 0; round < kRounds; ++round) {
    // Each round trains a window of the IDs, with repeats in the pull.
    std::vector<uint64_t> batch;
    for (int k = 0; k < 64; ++k) batch.push_back(ids[(round * 37 + k * 5) % ids.size()]);
    TablePull pulls[2];
    PullSpec specs[2] = {{0, batch, &pulls[0]}, {1, batch, &pulls[1]}};
    auto h = client->Pull(specs, wire::TRAIN);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(client->Wait(*h).ok());
    std::vector<float> grads[2];
    for (int t = 0; t < 2; ++t) {
      grads[t].resize(pulls[t].values.size());
      for (size_t k = 0; k < grads[t].size(); ++k)
        grads[t][k] = 0.125f * pulls[t].values[k] - 0.01f * static_cast<float>(round % 7) +
                      0.001f * static_cast<float>(pulls[t].counts[k / kDims[t]] % 5);
    }
    PushSpec push[2] = {{0, pulls[0].unique_ids, grads[0]}, {1, pulls[1].unique_ids, grads[1]}};
    auto ph = client->Push(push);
    ASSERT_TRUE(ph.ok()) << ph.status().ToString();
    ASSERT_TRUE(client->Wait(*ph).ok());
    if (round % 4 == 0) {
      std::vector<uint32_t> ones(batch.size(), 1);
      CountSpec counts[1] = {{0, batch, ones}};
      auto ch = client->PushCounts(counts);
      ASSERT_TRUE(ch.ok()) << ch.status().ToString();
      ASSERT_TRUE(client->Wait(*ch).ok());
    }
  }
}

struct Rows {
  std::vector<float> values[2];
  std::vector<uint32_t> counts[2];
  uint64_t total_rows = 0;
};

// Every trained row (EVAL pulls create nothing) and the row count over all shards.
Rows ReadRows(LocalCluster* cluster) {
  auto client = cluster->Connect();
  Rows rows;
  std::vector<uint64_t> all;
  for (int c = 0; c < kClients; ++c)
    for (uint64_t id : ClientIds(c)) all.push_back(id);
  for (int t = 0; t < 2; ++t) {
    TablePull p = test::PullOne(*client, t, all, wire::EVAL);
    rows.values[t] = p.values;
    rows.counts[t] = p.counts;
  }
  rows.total_rows = test::TotalRows(*client);
  return rows;
}

// Sends garbage to every lane from DEALER sockets, and raw bytes to the lanes' TCP ports,
// until stopped; checks that every reply it gets is an INVALID_REQUEST.
class GarbageSender {
 public:
  GarbageSender(const config::TrainConfig& cfg, const std::vector<std::string>& endpoints)
      : cfg_(cfg), placement_(cfg, {static_cast<int>(endpoints.size())}), endpoints_(endpoints) {
    for (int c = 0; c < kClients; ++c)
      for (uint64_t id : ClientIds(c)) ids_.push_back(id);
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
    raw_thread_ = std::thread([this] { RunRaw(); });
  }
  void Stop() {
    stop_ = true;
    thread_.join();
    raw_thread_.join();
  }
  uint64_t sent() const { return sent_; }
  uint64_t rejected() const { return rejected_; }
  uint64_t accepted() const { return accepted_; }
  uint64_t raw_connections() const { return raw_connections_; }

 private:
  using Frames = std::vector<std::string>;

  static std::string Bytes(const void* p, size_t n) {
    return std::string(static_cast<const char*>(p), n);
  }

  // A valid request of `op` for `n` training IDs of one shard that lane `lane` serves.
  Frames ValidRequest(int lane, wire::Op op, size_t n, uint32_t* table_out, uint32_t* shard_out) {
    for (;;) {
      const uint32_t t = rng_() % 2;
      const uint32_t shard = rng_() % cfg_.tables(t).shards();
      if (placement_.LaneOf(placement_.GlobalShard(t, shard)) != lane) continue;
      std::vector<uint64_t> keys;
      for (size_t k = rng_() % ids_.size(); keys.size() < n; k = (k + 1) % ids_.size())
        if (ShardOf(ids_[k], cfg_.tables(t).shards()) == shard) keys.push_back(ids_[k]);
      wire::RequestHeader h;
      h.set_version(wire::CURRENT_VERSION);
      h.set_op(op);
      h.set_request_id(rng_());
      wire::Segment* seg = h.add_segments();
      seg->set_table(t);
      seg->set_shard(shard);
      seg->set_count(keys.size());
      Frames f = {h.SerializeAsString(), Bytes(keys.data(), keys.size() * 8)};
      if (op == wire::PUSH) {
        std::vector<float> g(keys.size() * kDims[t], 100.0f);
        f.push_back(Bytes(g.data(), g.size() * 4));
      } else if (op == wire::PUSH_COUNTS) {
        std::vector<uint32_t> counts(keys.size(), 1000);
        f.push_back(Bytes(counts.data(), counts.size() * 4));
      }
      *table_out = t;
      *shard_out = shard;
      return f;
    }
  }

  // A valid PUSH, PUSH_COUNTS or TRAIN pull on training rows, made invalid one way.
  Frames Corrupted(int lane) {
    static constexpr wire::Op kOps[] = {wire::PUSH, wire::PUSH_COUNTS, wire::PULL};
    const wire::Op op = kOps[rng_() % 3];
    uint32_t t = 0, shard = 0;
    Frames f = ValidRequest(lane, op, 1 + rng_() % 16, &t, &shard);
    wire::RequestHeader h;
    EXPECT_TRUE(h.ParseFromString(f[0]));
    switch (rng_() % 10) {
      case 0:  // keys frame cut short
        f[1].resize(f[1].size() - 1 - rng_() % 7);
        break;
      case 1:  // payload frame cut short (a pull has none: drop the keys instead)
        if (f.size() == 3) {
          f[2].resize(rng_() % f[2].size());
        } else {
          f.pop_back();
        }
        break;
      case 2:  // a frame missing
        f.pop_back();
        break;
      case 3:  // an extra frame
        f.push_back(std::string(1 + rng_() % 64, 'x'));
        break;
      case 4:  // the segment declares one key more
        h.mutable_segments(0)->set_count(h.segments(0).count() + 1);
        f[0] = h.SerializeAsString();
        break;
      case 5:  // another wire version
        h.set_version(rng_() % 2 == 0 ? 0 : 2);
        f[0] = h.SerializeAsString();
        break;
      case 6: {  // a key of another shard
        const uint32_t shards = cfg_.tables(t).shards();
        uint64_t key = ids_[rng_() % ids_.size()];
        while (ShardOf(key, shards) == shard) key = ids_[rng_() % ids_.size()];
        std::memcpy(f[1].data(), &key, 8);
        break;
      }
      case 7:  // an unknown op
        h.set_op(static_cast<wire::Op>(50 + rng_() % 50));
        f[0] = h.SerializeAsString();
        break;
      case 8:  // header cut short
        f[0].resize(rng_() % f[0].size());
        break;
      default: {  // more keys than ps.max_request_keys
        const uint64_t n = cfg_.ps().max_request_keys() + 1;
        h.mutable_segments(0)->set_count(n);
        f[0] = h.SerializeAsString();
        std::string keys;
        while (keys.size() < n * 8) keys += f[1];
        f[1] = keys.substr(0, n * 8);
        if (f.size() == 3) f[2] = std::string(n * (op == wire::PUSH ? kDims[t] * 4 : 4), '\0');
        break;
      }
    }
    return f;
  }

  // Random bytes; never a header of the current version.
  Frames Random() {
    Frames f(1 + rng_() % 4);
    for (auto& frame : f) {
      frame.resize(rng_() % 200);
      for (auto& ch : frame) ch = static_cast<char>(rng_());
    }
    wire::RequestHeader h;
    if (h.ParseFromString(f[0]) && h.version() == wire::CURRENT_VERSION) f[0].insert(0, "\xff");
    return f;
  }

  void Drain(std::vector<zmq::socket_t>& socks, std::chrono::milliseconds wait) {
    std::vector<zmq::pollitem_t> items;
    for (auto& s : socks) items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
    zmq::poll(items, wait);
    for (auto& s : socks) {
      std::vector<zmq::message_t> reply;
      while (zmq::recv_multipart(s, std::back_inserter(reply), zmq::recv_flags::dontwait)) {
        wire::ReplyHeader rh;
        if (!reply.empty() && DecodeFrame(reply[0], &rh) && rh.code() == wire::INVALID_REQUEST) {
          ++rejected_;
        } else {
          ++accepted_;
          ADD_FAILURE() << "garbage was not refused: " << rh.ShortDebugString();
        }
        reply.clear();
      }
    }
  }

  void Run() {
    zmq::context_t ctx;
    std::vector<zmq::socket_t> socks;
    for (const auto& ep : endpoints_) {
      zmq::socket_t s(ctx, zmq::socket_type::dealer);
      s.set(zmq::sockopt::linger, 0);
      s.connect(ep);
      socks.push_back(std::move(s));
    }
    while (!stop_) {
      const int lane = static_cast<int>(rng_() % socks.size());
      Frames f;
      const uint32_t kind = rng_() % 1000;
      if (kind < 450) {
        f = Random();
      } else if (kind < 995) {
        f = Corrupted(lane);
      } else {  // over the server's message size limit: the connection is dropped
        f = {std::string(3 << 20, 'z')};
      }
      for (size_t i = 0; i < f.size(); ++i)
        socks[lane].send(zmq::buffer(f[i]),
                         i + 1 < f.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      ++sent_;
      Drain(socks, std::chrono::milliseconds(sent_ % 64 == 0 ? 1 : 0));
    }
    Drain(socks, std::chrono::milliseconds(200));
  }

  // Raw TCP: a cut-off ZMTP greeting, or random bytes, then the connection is closed.
  void RunRaw() {
    std::mt19937_64 rng(7);
    while (!stop_) {
      const std::string& ep = endpoints_[rng() % endpoints_.size()];
      const int port = std::stoi(ep.substr(ep.rfind(':') + 1));
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      ASSERT_GE(fd, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
        std::string bytes = rng() % 2 == 0 ? std::string("\xff\0\0\0\0\0\0\0\x01\x7f\x03", 11) : "";
        bytes.resize(bytes.size() + rng() % 300);
        for (size_t i = 11; i < bytes.size(); ++i) bytes[i] = static_cast<char>(rng());
        [[maybe_unused]] ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        ++raw_connections_;
      }
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  const config::TrainConfig cfg_;
  const Placement placement_;
  const std::vector<std::string> endpoints_;
  std::vector<uint64_t> ids_;
  std::mt19937_64 rng_{20240601};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0}, rejected_{0}, accepted_{0}, raw_connections_{0};
  std::thread thread_, raw_thread_;
};

Rows TrainAndRead(bool garbage) {
  const auto cfg = Config();
  LocalCluster cluster(cfg, 1, kLanes);
  std::unique_ptr<GarbageSender> sender;
  if (garbage) {
    sender = std::make_unique<GarbageSender>(cfg, cluster.server(0).endpoints());
    sender->Start();
    // Training starts once the lanes are answering garbage.
    while (sender->rejected() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) clients.emplace_back(Train, &cluster, c);
  for (auto& t : clients) t.join();
  if (sender) {
    const uint64_t during = sender->rejected();
    sender->Stop();
    EXPECT_GT(during, 1u);
    EXPECT_EQ(sender->accepted(), 0u);
    EXPECT_GT(sender->raw_connections(), 0u);
    std::printf(
        "garbage: %llu messages sent, %llu refused (%llu while training), %llu raw "
        "connections\n",
        static_cast<unsigned long long>(sender->sent()),
        static_cast<unsigned long long>(sender->rejected()),
        static_cast<unsigned long long>(during),
        static_cast<unsigned long long>(sender->raw_connections()));
  }
  return ReadRows(&cluster);
}

TEST(LiveServerGarbageTest, RowsBitIdenticalUnderGarbage) {
  const Rows quiet = TrainAndRead(false);
  const Rows noisy = TrainAndRead(true);
  // Garbage created no row.
  EXPECT_EQ(quiet.total_rows, noisy.total_rows);
  for (int t = 0; t < 2; ++t) {
    ASSERT_EQ(quiet.values[t].size(), noisy.values[t].size());
    EXPECT_EQ(0, std::memcmp(quiet.values[t].data(), noisy.values[t].data(),
                             quiet.values[t].size() * sizeof(float)))
        << "table " << t << " rows differ under garbage";
    EXPECT_EQ(quiet.counts[t], noisy.counts[t]);
  }
  uint64_t counted = 0;
  for (uint32_t c : quiet.counts[0]) counted += c > 0;
  EXPECT_GT(counted, 0u);
  // Training actually moved the rows away from their initial value.
  EXPECT_NE(quiet.values[0][0], 0.5f);
}

}  // namespace
}  // namespace din
