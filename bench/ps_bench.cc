// ps_bench: parameter-server throughput and latency, one din_ps and one or two clients:
//   mpirun -np 1 din_ps --config bench/ps_bench.pbtxt : -np 2 ps_bench --config
//   bench/ps_bench.pbtxt
// (bench/run.sh ps_bench does this). Worker 0 measures
//   (a) 1,000,000 distinct IDs x dim 16 in one request, pull then push (median of --reps),
//   (b) 4,096 distinct IDs per request, --requests requests, one at a time: keys/s, p50/p99,
// and the same shapes over a raw ZeroMQ round trip (a forked echo process that answers
// with the same bytes and does no table work): the transport limit; and against a
// ps-lite-style baseline (a forked minimal summing store: unordered_map + float arena,
// no optimizer state, no counts, one thread) with the same keys. Then
//   (c) both workers run (b)'s pulls at once: aggregate keys/s, worker 0's p99, and the
//       servers' keys per CPU-second (keys_per_s_per_server_core, from the process CPU
//       time each server reports in STATS).
// Also from CPU time, robust to a busy machine: the server's keys per CPU-second of (b)'s
// pulls and pushes, and the calling thread's CPU microseconds per (b) request. The forked
// processes are named ps_bench_echo and ps_bench_base (for perf --comm).
// With --wire fp16 (or bf16) worker 0 repeats (a) and (b) right after through a client
// with that ps.wire_precision and reports both wires side by side (wire_* fields).
// Prints one JSON line (worker 0).
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "common/config.h"
#include "common/json.h"
#include "common/net/job_process.h"
#include "worker/ps_client.h"

DEFINE_int32(reps, 5, "repetitions of the 1M-key requests");
DEFINE_int32(requests, 1000, "4k-key requests per measurement");
DEFINE_int32(big_keys, 1000000, "keys of the large request");
DEFINE_int32(small_keys, 4096, "keys of a small request");
DEFINE_string(wire, "fp32",
              "fp16 or bf16: also measure (a) and (b) with that ps.wire_precision, right after "
              "the float32 wire, and report both (bytes per key, keys/s, CPU time)");

namespace din {
namespace {

using Clock = std::chrono::steady_clock;
double Sec(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

// ---- The raw transport baseline: a ROUTER that answers a pull-shaped request (header +
// keys) with header + n*dim floats + n counts, and a push-shaped one (header + keys +
// values) with a header, without looking at the bytes.
[[noreturn]] void RawEcho(int port_fd, int dim) {
  prctl(PR_SET_NAME, "ps_bench_echo");
  zmq::context_t ctx;
  zmq::socket_t sock(ctx, zmq::socket_type::router);
  sock.set(zmq::sockopt::linger, 0);
  sock.bind("tcp://127.0.0.1:*");
  const std::string ep = sock.get(zmq::sockopt::last_endpoint);
  (void)!write(port_fd, ep.data(), ep.size());
  close(port_fd);
  std::vector<zmq::message_t> frames;
  for (;;) {
    frames.clear();
    if (!zmq::recv_multipart(sock, std::back_inserter(frames))) continue;
    if (frames.size() == 1) _exit(0);  // an identity-only message: shutdown
    const size_t n = frames[2].size() / sizeof(uint64_t);
    sock.send(frames[0], zmq::send_flags::sndmore);
    zmq::message_t header(16);
    if (frames.size() == 3) {  // pull
      sock.send(header, zmq::send_flags::sndmore);
      zmq::message_t values(n * dim * sizeof(float)), counts(n * sizeof(uint32_t));
      sock.send(values, zmq::send_flags::sndmore);
      sock.send(counts, zmq::send_flags::none);
    } else {
      sock.send(header, zmq::send_flags::none);
    }
  }
}

// ---- The ps-lite-style baseline: the minimal summing store of a ZeroMQ+Protobuf PS
// (std::unordered_map from key to a slot of one float arena, `dim` floats per key, no
// optimizer state, no counts), one thread. A pull creates missing keys as zeros and
// returns their values; a push adds the values.
[[noreturn]] void MiniStore(int port_fd, int dim) {
  prctl(PR_SET_NAME, "ps_bench_base");
  zmq::context_t ctx;
  zmq::socket_t sock(ctx, zmq::socket_type::router);
  sock.set(zmq::sockopt::linger, 0);
  sock.bind("tcp://127.0.0.1:*");
  const std::string ep = sock.get(zmq::sockopt::last_endpoint);
  (void)!write(port_fd, ep.data(), ep.size());
  close(port_fd);
  std::unordered_map<uint64_t, uint32_t> index;
  std::vector<float> arena;
  std::vector<zmq::message_t> frames;
  for (;;) {
    frames.clear();
    if (!zmq::recv_multipart(sock, std::back_inserter(frames))) continue;
    if (frames.size() == 1) _exit(0);
    const size_t n = frames[2].size() / sizeof(uint64_t);
    const auto* keys = static_cast<const uint64_t*>(frames[2].data());
    sock.send(frames[0], zmq::send_flags::sndmore);
    zmq::message_t header(16);
    if (frames.size() == 3) {  // pull
      sock.send(header, zmq::send_flags::sndmore);
      zmq::message_t values(n * dim * sizeof(float));
      auto* out = static_cast<float*>(values.data());
      for (size_t i = 0; i < n; ++i) {
        auto [it, fresh] = index.try_emplace(keys[i], static_cast<uint32_t>(arena.size() / dim));
        if (fresh) arena.resize(arena.size() + dim, 0.0f);
        std::memcpy(out + i * dim, &arena[size_t{it->second} * dim], dim * sizeof(float));
      }
      sock.send(values, zmq::send_flags::none);
    } else {
      const auto* g = static_cast<const float*>(frames[3].data());
      for (size_t i = 0; i < n; ++i) {
        auto it = index.find(keys[i]);
        if (it == index.end()) continue;
        float* w = &arena[size_t{it->second} * dim];
        for (int j = 0; j < dim; ++j) w[j] += g[i * dim + j];
      }
      sock.send(header, zmq::send_flags::none);
    }
  }
}

struct RawClient {
  zmq::context_t ctx;
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
  explicit RawClient(const std::string& ep) {
    sock.set(zmq::sockopt::linger, 0);
    sock.connect(ep);
  }
  // One request/reply round trip of the given shape (keys and gradients are copied in
  // when given, for the baseline store; the echo ignores the bytes).
  void RoundTrip(size_t n, int dim, bool push, const uint64_t* ids = nullptr,
                 const float* g = nullptr) {
    zmq::message_t header(24), keys(n * sizeof(uint64_t));
    if (ids != nullptr) std::memcpy(keys.data(), ids, n * sizeof(uint64_t));
    sock.send(header, zmq::send_flags::sndmore);
    if (push) {
      zmq::message_t grads(n * dim * sizeof(float));
      if (g != nullptr) std::memcpy(grads.data(), g, n * dim * sizeof(float));
      sock.send(keys, zmq::send_flags::sndmore);
      sock.send(grads, zmq::send_flags::none);
    } else {
      sock.send(keys, zmq::send_flags::none);
    }
    std::vector<zmq::message_t> reply;
    (void)zmq::recv_multipart(sock, std::back_inserter(reply));
  }
};

Status TimedPull(PsClient& c, std::span<const uint64_t> ids, TablePull* out) {
  PullSpec spec{0, ids, out};
  DIN_ASSIGN_OR_RETURN(auto h, c.Pull({&spec, 1}, wire::TRAIN));
  return c.Wait(h);
}
Status TimedPush(PsClient& c, std::span<const uint64_t> ids, std::span<const float> g) {
  PushSpec spec{0, ids, g};
  DIN_ASSIGN_OR_RETURN(auto h, c.Push({&spec, 1}));
  return c.Wait(h);
}

// CPU seconds all servers have used (STATS; each server reports its process CPU time).
Result<double> ServerCpuSeconds(PsClient& c) {
  DIN_ASSIGN_OR_RETURN(auto stats, c.Stats());
  const Placement& pl = c.placement();
  std::vector<double> per_server(pl.num_servers(), 0.0);
  for (const auto& st : stats) {
    const int s = pl.ServerOf(pl.GlobalShard(static_cast<int>(st.table()), st.shard()));
    per_server[s] = std::max(per_server[s], st.server_cpu_seconds());
  }
  return std::accumulate(per_server.begin(), per_server.end(), 0.0);
}

double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * t.tv_nsec;
}

Status Run(const config::TrainConfig& cfg, Cluster& cluster, const std::string& raw_ep,
           const std::string& base_ep) {
  const int dim = static_cast<int>(cfg.tables(0).dim());
  config::PsConfig::WirePrecision wire;
  if (FLAGS_wire == "fp32")
    wire = config::PsConfig::FP32;
  else if (FLAGS_wire == "fp16")
    wire = config::PsConfig::FP16;
  else if (FLAGS_wire == "bf16")
    wire = config::PsConfig::BF16;
  else
    return Status::InvalidArgument("--wire " + FLAGS_wire + ": expected fp32, fp16 or bf16");
  // The float32 wire is the reference: --wire only adds the second measurement.
  config::TrainConfig cfg32 = cfg;
  cfg32.mutable_ps()->set_wire_precision(config::PsConfig::FP32);
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg32, cluster.servers()));
  const int w = cluster.role_rank();
  const size_t big = FLAGS_big_keys, small = FLAGS_small_keys;
  std::mt19937_64 rng(17 + w);
  std::vector<uint64_t> pool(big);
  for (size_t i = 0; i < big; ++i)
    pool[i] = (i + 1 + (static_cast<uint64_t>(w) << 40)) * 0x9E3779B97F4A7C15ULL;
  TablePull out;
  DIN_RETURN_IF_ERROR(TimedPull(*client, pool, &out));  // creates the rows
  std::vector<float> grads(big * dim, 1e-3f);

  // 4k-key requests: distinct IDs, random slices of a shuffled pool.
  std::vector<uint64_t> shuffled = pool;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  auto slice = [&](int r) {
    const size_t start = (static_cast<size_t>(r) * 7919 * small) % (big - small);
    return std::span<const uint64_t>(shuffled.data() + start, small);
  };

  // (a) and (b) through one client: throughput, latencies and CPU time.
  struct Figures {
    std::vector<double> pull_s, push_s, pull_lat, push_lat;
    double srv0, srv1, srv2, cli0, cli1, cli2;
    Clock::time_point a0, a1, a2;
  };
  auto measure = [&](PsClient& c, Figures* f) -> Status {
    for (int r = 0; r < FLAGS_reps; ++r) {
      auto t0 = Clock::now();
      DIN_RETURN_IF_ERROR(TimedPull(c, pool, &out));
      auto t1 = Clock::now();
      DIN_RETURN_IF_ERROR(TimedPush(c, pool, grads));
      auto t2 = Clock::now();
      f->pull_s.push_back(Sec(t0, t1));
      f->push_s.push_back(Sec(t1, t2));
    }
    DIN_ASSIGN_OR_RETURN(f->srv0, ServerCpuSeconds(c));
    f->cli0 = ThreadCpuSeconds();
    f->a0 = Clock::now();
    for (int r = 0; r < FLAGS_requests; ++r) {
      auto t0 = Clock::now();
      DIN_RETURN_IF_ERROR(TimedPull(c, slice(r), &out));
      f->pull_lat.push_back(Sec(t0, Clock::now()));
    }
    f->a1 = Clock::now();
    f->cli1 = ThreadCpuSeconds();
    DIN_ASSIGN_OR_RETURN(f->srv1, ServerCpuSeconds(c));
    std::span<const float> small_grads(grads.data(), small * dim);
    for (int r = 0; r < FLAGS_requests; ++r) {
      auto t0 = Clock::now();
      DIN_RETURN_IF_ERROR(TimedPush(c, slice(r), small_grads));
      f->push_lat.push_back(Sec(t0, Clock::now()));
    }
    f->a2 = Clock::now();
    f->cli2 = ThreadCpuSeconds();
    DIN_ASSIGN_OR_RETURN(f->srv2, ServerCpuSeconds(c));
    return Status::Ok();
  };

  Json json;  // worker 0's figures, in the order printed
  if (w == 0) {
    Figures fig;
    DIN_RETURN_IF_ERROR(measure(*client, &fig));
    // --wire: the same measurements right after through a client of that precision.
    std::optional<Figures> half;
    if (wire != config::PsConfig::FP32) {
      config::TrainConfig half_cfg = cfg;
      half_cfg.mutable_ps()->set_wire_precision(wire);
      DIN_ASSIGN_OR_RETURN(auto half_client, PsClient::Connect(half_cfg, cluster.servers()));
      half.emplace();
      DIN_RETURN_IF_ERROR(measure(*half_client, &*half));
    }
    const std::vector<double>&pull_s = fig.pull_s, &push_s = fig.push_s;
    const std::vector<double>&pull_lat = fig.pull_lat, &push_lat = fig.push_lat;
    const double srv0 = fig.srv0, srv1 = fig.srv1, srv2 = fig.srv2;
    const double cli0 = fig.cli0, cli1 = fig.cli1, cli2 = fig.cli2;
    const Clock::time_point a0 = fig.a0, a1 = fig.a1, a2 = fig.a2;

    RawClient raw(raw_ep);
    std::vector<double> raw_pull_big, raw_push_big;
    for (int r = 0; r < FLAGS_reps; ++r) {
      auto t0 = Clock::now();
      raw.RoundTrip(big, dim, false);
      auto t1 = Clock::now();
      raw.RoundTrip(big, dim, true);
      raw_pull_big.push_back(Sec(t0, t1));
      raw_push_big.push_back(Sec(t1, Clock::now()));
    }
    auto r0 = Clock::now();
    for (int r = 0; r < FLAGS_requests; ++r) raw.RoundTrip(small, dim, false);
    auto r1 = Clock::now();
    for (int r = 0; r < FLAGS_requests; ++r) raw.RoundTrip(small, dim, true);
    auto r2 = Clock::now();

    // The baseline store, same shapes and keys (its rows are created by a first pull).
    RawClient base(base_ep);
    base.RoundTrip(big, dim, false, pool.data());
    std::vector<double> base_pull_big, base_push_big;
    for (int r = 0; r < FLAGS_reps; ++r) {
      auto t0 = Clock::now();
      base.RoundTrip(big, dim, false, pool.data());
      auto t1 = Clock::now();
      base.RoundTrip(big, dim, true, pool.data(), grads.data());
      base_pull_big.push_back(Sec(t0, t1));
      base_push_big.push_back(Sec(t1, Clock::now()));
    }
    auto b0 = Clock::now();
    for (int r = 0; r < FLAGS_requests; ++r) base.RoundTrip(small, dim, false, slice(r).data());
    auto b1 = Clock::now();
    for (int r = 0; r < FLAGS_requests; ++r)
      base.RoundTrip(small, dim, true, slice(r).data(), grads.data());
    auto b2 = Clock::now();

    const double keys_small = static_cast<double>(small) * FLAGS_requests;
    const double base_pull_1m = big / Median(base_pull_big),
                 base_push_1m = big / Median(base_push_big);
    const double base_pull_4k = keys_small / Sec(b0, b1), base_push_4k = keys_small / Sec(b1, b2);
    const double pull_1m = big / Median(pull_s), push_1m = big / Median(push_s);
    const double pull_4k = keys_small / Sec(a0, a1), push_4k = keys_small / Sec(a1, a2);
    const double raw_pull_1m = big / Median(raw_pull_big), raw_push_1m = big / Median(raw_push_big);
    const double raw_pull_4k = keys_small / Sec(r0, r1), raw_push_4k = keys_small / Sec(r1, r2);
    const double bytes_per_key_pull = 8 + 4 * dim + 4;
    // Work per key, from CPU time (robust to a busy machine): the server process's keys
    // per CPU second, and the calling thread's CPU time per 4k-key request.
    const double geo = std::pow((pull_1m / raw_pull_1m) * (push_1m / raw_push_1m) *
                                    (pull_4k / raw_pull_4k) * (push_4k / raw_push_4k),
                                0.25);
    auto put = [&json](const char* key, double v, int decimals) {
      json[key] = JsonNumber(v, decimals);
    };
    put("pull_keys_per_s_1m", pull_1m, 0);
    put("push_keys_per_s_1m", push_1m, 0);
    put("pull_mb_per_s_1m", pull_1m * bytes_per_key_pull / 1e6, 1);
    put("push_mb_per_s_1m", push_1m * (8 + 4 * dim) / 1e6, 1);
    put("pull_keys_per_s_4k", pull_4k, 0);
    put("push_keys_per_s_4k", push_4k, 0);
    put("pull_p50_us_4k", 1e6 * Quantile(pull_lat, 0.5), 0);
    put("pull_p99_us_4k", 1e6 * Quantile(pull_lat, 0.99), 0);
    put("push_p50_us_4k", 1e6 * Quantile(push_lat, 0.5), 0);
    put("push_p99_us_4k", 1e6 * Quantile(push_lat, 0.99), 0);
    put("raw_pull_keys_per_s_1m", raw_pull_1m, 0);
    put("raw_push_keys_per_s_1m", raw_push_1m, 0);
    put("raw_pull_keys_per_s_4k", raw_pull_4k, 0);
    put("raw_push_keys_per_s_4k", raw_push_4k, 0);
    put("raw_ratio_pull_1m", pull_1m / raw_pull_1m, 3);
    put("raw_ratio_push_1m", push_1m / raw_push_1m, 3);
    put("raw_ratio_pull_4k", pull_4k / raw_pull_4k, 3);
    put("raw_ratio_push_4k", push_4k / raw_push_4k, 3);
    // The headline ratio: the geometric mean over the four shapes.
    put("raw_zmq_ratio", geo, 3);
    put("baseline_pull_keys_per_s_1m", base_pull_1m, 0);
    put("baseline_push_keys_per_s_1m", base_push_1m, 0);
    put("baseline_pull_keys_per_s_4k", base_pull_4k, 0);
    put("baseline_push_keys_per_s_4k", base_push_4k, 0);
    put("vs_baseline_pull_1m", pull_1m / base_pull_1m, 2);
    put("vs_baseline_push_1m", push_1m / base_push_1m, 2);
    put("vs_baseline_pull_4k", pull_4k / base_pull_4k, 2);
    put("vs_baseline_push_4k", push_4k / base_push_4k, 2);
    put("server_keys_per_cpu_s_pull_4k", keys_small / (srv1 - srv0), 0);
    put("server_keys_per_cpu_s_push_4k", keys_small / (srv2 - srv1), 0);
    put("client_cpu_us_per_pull_4k", 1e6 * (cli1 - cli0) / FLAGS_requests, 1);
    put("client_cpu_us_per_push_4k", 1e6 * (cli2 - cli1) / FLAGS_requests, 1);
    if (half) {
      // The half-precision wire against the float32 one, measured one after the other in
      // this run: payload bytes per key (keys, values or gradients, counts; headers
      // excluded), keys/s, and CPU time per key on both sides.
      const Figures& h = *half;
      const double value_bytes = 2;
      json["wire"] = FLAGS_wire;
      put("wire_bytes_per_key_pull_fp32", bytes_per_key_pull, 0);
      put("wire_bytes_per_key_pull_half", 8 + value_bytes * dim + 4, 0);
      put("wire_bytes_per_key_push_fp32", 8 + 4 * dim, 0);
      put("wire_bytes_per_key_push_half", 8 + value_bytes * dim, 0);
      const double h_pull_1m = big / Median(h.pull_s), h_push_1m = big / Median(h.push_s);
      const double h_pull_4k = keys_small / Sec(h.a0, h.a1);
      const double h_push_4k = keys_small / Sec(h.a1, h.a2);
      put("wire_half_pull_keys_per_s_1m", h_pull_1m, 0);
      put("wire_half_push_keys_per_s_1m", h_push_1m, 0);
      put("wire_half_pull_keys_per_s_4k", h_pull_4k, 0);
      put("wire_half_push_keys_per_s_4k", h_push_4k, 0);
      put("wire_half_vs_fp32_pull_1m", h_pull_1m / pull_1m, 3);
      put("wire_half_vs_fp32_push_1m", h_push_1m / push_1m, 3);
      put("wire_half_vs_fp32_pull_4k", h_pull_4k / pull_4k, 3);
      put("wire_half_vs_fp32_push_4k", h_push_4k / push_4k, 3);
      put("wire_half_server_keys_per_cpu_s_pull_4k", keys_small / (h.srv1 - h.srv0), 0);
      put("wire_half_server_keys_per_cpu_s_push_4k", keys_small / (h.srv2 - h.srv1), 0);
      put("wire_half_client_cpu_us_per_pull_4k", 1e6 * (h.cli1 - h.cli0) / FLAGS_requests, 1);
      put("wire_half_client_cpu_us_per_push_4k", 1e6 * (h.cli2 - h.cli1) / FLAGS_requests, 1);
    }
  }

  // (c) both workers pull 4k-key requests at once.
  double srv_c0 = 0;
  if (w == 0) {
    DIN_ASSIGN_OR_RETURN(srv_c0, ServerCpuSeconds(*client));
  }
  DIN_RETURN_IF_ERROR(cluster.RoleBarrier());
  auto c0 = Clock::now();
  std::vector<double> lat_c;
  for (int r = 0; r < FLAGS_requests; ++r) {
    auto t0 = Clock::now();
    DIN_RETURN_IF_ERROR(TimedPull(*client, slice(r), &out));
    lat_c.push_back(Sec(t0, Clock::now()));
  }
  double elapsed = Sec(c0, Clock::now()), slowest = 0;
  MPI_Request req;
  MPI_Iallreduce(&elapsed, &slowest, 1, MPI_DOUBLE, MPI_MAX, cluster.role_comm(), &req);
  DIN_RETURN_IF_ERROR(Cluster::WaitPolling(&req));
  if (w == 0) {
    const double total_keys = static_cast<double>(small) * FLAGS_requests * cluster.num_workers();
    // Every worker has finished its pulls (the reduction above): the servers' CPU time
    // since srv_c0 is theirs. keys_per_s_per_server_core is keys per server CPU-second
    // with all clients pulling at once: the sizing figure (README, sizing the servers).
    DIN_ASSIGN_OR_RETURN(const double srv_c1, ServerCpuSeconds(*client));
    Json line;
    line["bench"] = "ps_bench";
    line["servers"] = cluster.num_servers();
    line["clients"] = cluster.num_workers();
    line["dim"] = dim;
    for (const auto& [key, value] : json.items()) line[key] = value;
    line["pull_keys_per_s_4k_2clients"] = JsonNumber(total_keys / slowest, 0);
    line["pull_p99_us_4k_2clients"] = JsonNumber(1e6 * Quantile(lat_c, 0.99), 0);
    line["keys_per_s_per_server_core"] = JsonNumber(total_keys / (srv_c1 - srv_c0), 0);
    line["server_cores_used_2clients"] = JsonNumber((srv_c1 - srv_c0) / slowest, 2);
    // What the baselines are, and what they skip that din_ps does.
    line["raw_baseline"] =
        "forked ZeroMQ ROUTER answering with reply frames of the right sizes, unread and "
        "unfilled: no header parsing, validation, table lookup or update";
    line["baseline"] =
        "forked ps-lite-style store (unordered_map + float arena, one thread): pulls create "
        "zero rows, pushes add; no header parsing, validation, optimizer, counts, "
        "initializer, sharding or lanes";
    std::printf("%s\n", JsonLine(line).c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) {
  din::InitProcess(argv[0], "parameter-server throughput (bench/run.sh ps_bench)");
  // The raw echo and the baseline store are forked before MPI starts (forking an MPI
  // process is unsafe); they need the table's dim from --config (a config with one table
  // 'emb' of dim 16), read here once without consuming the flags.
  gflags::ParseCommandLineFlags(&argc, &argv, false);
  auto cfg = din::LoadConfig(FLAGS_config);
  CHECK(cfg.ok()) << cfg.status().ToString();
  const int dim = static_cast<int>(cfg->tables(0).dim());
  auto spawn = [dim](void (*serve)(int, int), std::string* ep) {
    int fds[2];
    PCHECK(pipe(fds) == 0);
    const pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      serve(fds[1], dim);
    }
    close(fds[1]);
    char buf[256] = {0};
    PCHECK(read(fds[0], buf, sizeof(buf) - 1) > 0);
    close(fds[0]);
    *ep = buf;
    return pid;
  };
  std::string ep, base_ep;
  const pid_t echo = spawn(din::RawEcho, &ep);
  const pid_t base = spawn(din::MiniStore, &base_ep);

  din::Status st;
  {
    din::JobProcess job = din::StartJob(&argc, &argv);
    din::Cluster& cluster = *job.cluster;
    st = cluster.Rendezvous(din::Role::kWorker, "", din::TablesFingerprint(job.config));
    if (st.ok()) st = din::Run(job.config, cluster, ep, base_ep);
    if (!st.ok()) cluster.Fail(st);
    st = cluster.Barrier();
  }
  for (pid_t child : {echo, base}) {
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
  }
  return st.ok() ? 0 : 1;
}
