// evict_bench: the cost of eviction under a cap (when_full EVICT_LFU / EVICT_LRU,
// docs/design.md §5) on one lane, requests sent straight to its LaneHandler. Per policy,
// one shard of dim-16 SGD rows: --cap rows are created, then --requests PUSH requests of
// --keys keys each, half of them hot IDs (a fixed set of cap/4) and half IDs never seen
// before, so that every request of a capped table evicts as many rows as it creates.
// Policies: none (no cap: the table grows), SKIP_NEW (capped: new IDs get no row),
// EVICT_LFU and EVICT_LRU. Prints one JSON line with, per policy, ns per pushed key over
// the streaming requests, the median, 99th percentile and longest request in ms (each
// includes the eviction work after it),
// rows at the end, rows evicted, and the ratio of ns per key to `none` of the same run.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <gflags/gflags.h>

#include "common/config.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/net/wire.h"
#include "common/placement.h"
#include "ps/lane_handler.h"

DEFINE_uint64(cap, 1'000'000, "max_rows_per_shard of the capped policies");
DEFINE_uint64(keys, 4096, "keys per PUSH request");
DEFINE_uint64(requests, 400, "streaming PUSH requests after the fill");

namespace {

using Clock = std::chrono::steady_clock;

std::vector<zmq::message_t> PushRequest(const std::vector<uint64_t>& keys, uint32_t dim) {
  din::wire::RequestHeader h;
  h.set_version(din::wire::CURRENT_VERSION);
  h.set_op(din::wire::PUSH);
  din::wire::Segment* s = h.add_segments();
  s->set_table(0);
  s->set_shard(0);
  s->set_count(keys.size());
  std::vector<float> g(keys.size() * dim, 0.001f);
  std::vector<zmq::message_t> frames;
  frames.push_back(din::EncodeFrame(h));
  frames.push_back(din::ArrayFrame<uint64_t>(keys));
  frames.push_back(din::ArrayFrame<float>(g));
  return frames;
}

struct Figures {
  double ns_per_key = 0;
  double max_request_ms = 0;
  double p50_request_ms = 0;
  double p99_request_ms = 0;
  uint64_t rows = 0;
  uint64_t evicted = 0;
};

Figures Run(const std::string& policy) {
  std::string more;
  if (policy != "none")
    more = "max_rows_per_shard: " + std::to_string(FLAGS_cap) + " when_full: " + policy;
  auto cfg =
      din::ParseConfig("tables { name: \"t\" dim: 16 shards: 1 optimizer { sgd {} } " + more +
                           " }\nps { max_request_keys: " + std::to_string(FLAGS_keys) + " }\n",
                       "evict_bench");
  if (!cfg.ok()) {
    std::fprintf(stderr, "%s\n", cfg.status().ToString().c_str());
    std::exit(1);
  }
  din::Placement placement(*cfg, {1});
  std::vector<din::TableSpec> tables;
  for (const auto& t : cfg->tables()) tables.emplace_back(t);
  din::LaneHandler lane(tables, placement, 0, 0, FLAGS_keys);
  const uint32_t dim = 16;
  uint64_t next = 1;
  auto send = [&](const std::vector<uint64_t>& keys) {
    auto frames = PushRequest(keys, dim);
    auto reply = lane.Handle(frames);
    din::wire::ReplyHeader rh;
    if (!din::DecodeFrame(reply[0], &rh) || rh.code() != din::wire::OK) {
      std::fprintf(stderr, "%s: push failed: %s\n", policy.c_str(), rh.error().c_str());
      std::exit(1);
    }
    while (lane.HasIdleWork()) lane.IdleWork();
  };
  // Fill: cap distinct IDs, the first cap/4 of them the hot set.
  std::vector<uint64_t> keys;
  for (uint64_t i = 0; i < FLAGS_cap; ++i) {
    keys.push_back(din::Mix64(next++));
    if (keys.size() == FLAGS_keys) {
      send(keys);
      keys.clear();
    }
  }
  if (!keys.empty()) send(keys);
  const uint64_t hot = std::max<uint64_t>(1, FLAGS_cap / 4);
  Figures f;
  uint64_t h = 0;
  std::vector<double> ms;
  const auto t0 = Clock::now();
  for (uint64_t r = 0; r < FLAGS_requests; ++r) {
    keys.clear();
    for (uint64_t i = 0; i < FLAGS_keys / 2; ++i) keys.push_back(din::Mix64(1 + (h++ % hot)));
    while (keys.size() < FLAGS_keys) keys.push_back(din::Mix64(next++));
    const auto a = Clock::now();
    send(keys);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  std::sort(ms.begin(), ms.end());
  f.max_request_ms = ms.back();
  f.p50_request_ms = ms[ms.size() / 2];
  f.p99_request_ms = ms[ms.size() * 99 / 100];
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  f.ns_per_key = 1e9 * s / static_cast<double>(FLAGS_requests * FLAGS_keys);
  std::vector<zmq::message_t> stats;
  {
    din::wire::RequestHeader sh;
    sh.set_version(din::wire::CURRENT_VERSION);
    sh.set_op(din::wire::STATS);
    stats.push_back(din::EncodeFrame(sh));
  }
  auto reply = lane.Handle(stats);
  din::wire::ReplyHeader rh;
  din::DecodeFrame(reply[0], &rh);
  for (const auto& st : rh.stats()) {
    f.rows += st.rows();
    f.evicted += st.evicted_rows();
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  din::Json j;
  j["bench"] = "evict";
  j["cap"] = FLAGS_cap;
  j["keys_per_request"] = FLAGS_keys;
  j["requests"] = FLAGS_requests;
  din::Json policies;
  double base = 0;
  for (const std::string policy : {"none", "SKIP_NEW", "EVICT_LFU", "EVICT_LRU"}) {
    const Figures f = Run(policy);
    if (policy == "none") base = f.ns_per_key;
    din::Json p;
    p["ns_per_key"] = din::JsonNumber(f.ns_per_key, 1);
    p["p50_request_ms"] = din::JsonNumber(f.p50_request_ms, 2);
    p["p99_request_ms"] = din::JsonNumber(f.p99_request_ms, 2);
    p["max_request_ms"] = din::JsonNumber(f.max_request_ms, 2);
    p["rows"] = f.rows;
    p["evicted_rows"] = f.evicted;
    p["vs_none"] = din::JsonNumber(f.ns_per_key / base, 3);
    policies[policy] = std::move(p);
    std::fprintf(stderr,
                 "%-10s %8.1f ns/key  request p50 %6.2f p99 %6.2f max %7.2f ms  rows %9llu  "
                 "evicted %9llu\n",
                 policy.c_str(), f.ns_per_key, f.p50_request_ms, f.p99_request_ms, f.max_request_ms,
                 static_cast<unsigned long long>(f.rows),
                 static_cast<unsigned long long>(f.evicted));
  }
  j["policies"] = std::move(policies);
  std::printf("%s\n", din::JsonLine(j).c_str());
  return 0;
}
