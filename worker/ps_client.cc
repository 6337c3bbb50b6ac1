#include "worker/ps_client.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>

#include <glog/logging.h>
#include <zmq_addon.hpp>

#include "common/hash.h"
#include "common/net/curve_keys.h"
#include "common/net/wire.h"

namespace din {

using Clock = std::chrono::steady_clock;

Result<std::unique_ptr<PsClient>> PsClient::Connect(const config::TrainConfig& cfg,
                                                    const std::vector<PeerInfo>& servers) {
  if (servers.empty()) return Status::InvalidArgument("no servers to connect to");
  std::optional<ClientCurveKeys> curve;  // security.curve: the job's keys
  if (cfg.security().curve()) {
    DIN_ASSIGN_OR_RETURN(curve, LoadClientCurveKeys(cfg.security()));
  }
  Placement placement(cfg, LaneCounts(servers));
  std::unique_ptr<PsClient> client(new PsClient(cfg, std::move(placement)));
  for (int d = 0; d < client->placement_.num_dests(); ++d) {
    const int s = client->placement_.DestServer(d);
    const std::string endpoint =
        SplitEndpoints(servers[s].endpoint)[client->placement_.DestLane(d)];
    zmq::socket_t sock(client->ctx_, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    sock.set(zmq::sockopt::rcvhwm, 0);
    if (curve) {
      sock.set(zmq::sockopt::curve_serverkey, curve->server_public_key);
      sock.set(zmq::sockopt::curve_publickey, curve->client.public_key);
      sock.set(zmq::sockopt::curve_secretkey, curve->client.secret_key);
    }
    try {
      sock.connect(endpoint);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot connect to server " + std::to_string(s) + " at " +
                                 endpoint + ": " + e.what());
    }
    client->sockets_.push_back(std::move(sock));
    client->endpoints_.push_back(endpoint);
    client->dest_names_.push_back(
        "server " + std::to_string(s) + " (world rank " + std::to_string(servers[s].world_rank) +
        ", host " + servers[s].host + ", lane " + std::to_string(client->placement_.DestLane(d)) +
        ") at " + endpoint);
  }
  return client;
}

PsClient::PsClient(const config::TrainConfig& cfg, Placement placement)
    : cfg_(cfg),
      placement_(std::move(placement)),
      wire_(static_cast<WeightFormat>(cfg.ps().wire_precision())),
      timeout_(cfg.ps().request_timeout_ms()),
      frame_pool_(FramePool::Create()) {
  const uint32_t g_total = placement_.global_shards();
  shard_of_rank_.resize(g_total);
  std::iota(shard_of_rank_.begin(), shard_of_rank_.end(), 0u);
  std::stable_sort(shard_of_rank_.begin(), shard_of_rank_.end(), [&](uint32_t a, uint32_t b) {
    return placement_.DestOf(a) < placement_.DestOf(b);
  });
  rank_of_shard_.resize(g_total);
  for (uint32_t r = 0; r < g_total; ++r) rank_of_shard_[shard_of_rank_[r]] = r;
  std::vector<uint32_t> table_of_gshard(g_total);
  for (int t = 0; t < placement_.num_tables(); ++t)
    for (uint32_t s = 0; s < placement_.shards(t); ++s)
      table_of_gshard[placement_.GlobalShard(t, s)] = static_cast<uint32_t>(t);
  dest_of_rank_.resize(g_total);
  table_of_rank_.resize(g_total);
  shard_in_table_of_rank_.resize(g_total);
  for (uint32_t r = 0; r < g_total; ++r) {
    const uint32_t g = shard_of_rank_[r];
    dest_of_rank_[r] = static_cast<uint32_t>(placement_.DestOf(g));
    table_of_rank_[r] = table_of_gshard[g];
    shard_in_table_of_rank_[r] =
        g - placement_.GlobalShard(static_cast<int>(table_of_gshard[g]), 0);
  }
  rank_counts_.assign(g_total, 0);
  rank_cursor_.assign(g_total, 0);
  rank_payload_cursor_.assign(g_total, 0);
}

PsClient::~PsClient() {
  sockets_.clear();
  ctx_.close();
}

void PsClient::DedupRoute(int table, std::span<const uint64_t> ids, TablePull* out) {
  const uint32_t shards = placement_.shards(table);
  const uint32_t* rank_of_shard = rank_of_shard_.data() + placement_.GlobalShard(table, 0);
  out->unique_ids.clear();
  out->index.resize(ids.size());
  const size_t cap = std::bit_ceil(std::max<size_t>(16, ids.size() * 2));
  dedup_slots_.assign(cap, 0);  // 0 = empty, else unique index + 1
  const size_t mask = cap - 1;
  uint32_t* slots = dedup_slots_.data();
  // Hashes run kAhead IDs ahead of the probes, whose slots are prefetched: a large
  // batch's map does not fit in cache.
  constexpr size_t kAhead = 8;
  uint64_t ring[kAhead];
  const size_t n = ids.size();
  for (size_t i = 0; i < std::min(n, kAhead); ++i) {
    ring[i] = Mix64(ids[i]);
    __builtin_prefetch(slots + (ring[i] & mask));
  }
  for (size_t i = 0; i < n; ++i) {
    const uint64_t id = ids[i];
    const uint64_t h = ring[i % kAhead];
    if (i + kAhead < n) {
      const uint64_t next = Mix64(ids[i + kAhead]);
      ring[i % kAhead] = next;
      __builtin_prefetch(slots + (next & mask));
    }
    size_t slot = h & mask;
    for (;;) {
      const uint32_t v = slots[slot];
      if (v == 0) {
        out->unique_ids.push_back(id);
        key_rank_.push_back(rank_of_shard[h % shards]);
        slots[slot] = static_cast<uint32_t>(out->unique_ids.size());
        out->index[i] = static_cast<uint32_t>(out->unique_ids.size() - 1);
        break;
      }
      if (out->unique_ids[v - 1] == id) {
        out->index[i] = v - 1;
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
}

void PsClient::Route(int table, std::span<const uint64_t> ids) {
  const uint32_t shards = placement_.shards(table);
  const uint32_t* rank_of_shard = rank_of_shard_.data() + placement_.GlobalShard(table, 0);
  const size_t base = key_rank_.size();
  key_rank_.resize(base + ids.size());
  uint32_t* out = key_rank_.data() + base;
  for (size_t i = 0; i < ids.size(); ++i) out[i] = rank_of_shard[Mix64(ids[i]) % shards];
}

Result<PsClient::Handle> PsClient::Pull(std::span<const PullSpec> tables, wire::PullMode mode) {
  std::vector<Entry> entries;
  std::vector<TablePull*> outs;
  key_rank_.clear();
  for (const PullSpec& spec : tables) {
    if (spec.table < 0 || spec.table >= placement_.num_tables())
      return Status::InvalidArgument("pull: unknown table index " + std::to_string(spec.table));
    DedupRoute(spec.table, spec.ids, spec.out);
    const uint32_t dim = cfg_.tables(spec.table).dim();
    // Every element is written by Wait(); resize keeps a reused TablePull's memory warm.
    spec.out->values.resize(spec.out->unique_ids.size() * dim);
    spec.out->counts.resize(spec.out->unique_ids.size());
    entries.push_back({spec.table, spec.out->unique_ids});
    outs.push_back(spec.out);
  }
  return Send(wire::PULL, mode, entries, std::move(outs), nullptr, /*prepass=*/false,
              /*routed=*/true);
}

Result<PsClient::Handle> PsClient::Push(std::span<const PushSpec> tables) {
  DIN_ASSIGN_OR_RETURN(std::vector<Entry> entries, PushEntries(tables));
  return Send(wire::PUSH, wire::TRAIN, entries, {});
}

Result<PsClient::Handle> PsClient::PushStep(std::span<const PushSpec> tables,
                                            const wire::SyncStep& sync) {
  DIN_ASSIGN_OR_RETURN(std::vector<Entry> entries, PushEntries(tables));
  return Send(wire::PUSH, wire::TRAIN, entries, {}, &sync);
}

Result<std::vector<PsClient::Entry>> PsClient::PushEntries(std::span<const PushSpec> tables) const {
  std::vector<Entry> entries;
  for (const PushSpec& spec : tables) {
    if (spec.table < 0 || spec.table >= placement_.num_tables())
      return Status::InvalidArgument("push: unknown table index " + std::to_string(spec.table));
    const uint32_t dim = cfg_.tables(spec.table).dim();
    if (spec.grads.size() != spec.ids.size() * dim)
      return Status::InvalidArgument("push to table " + cfg_.tables(spec.table).name() + ": " +
                                     std::to_string(spec.grads.size()) + " gradient floats for " +
                                     std::to_string(spec.ids.size()) + " ids of dim " +
                                     std::to_string(dim));
    entries.push_back({spec.table, spec.ids, reinterpret_cast<const std::byte*>(spec.grads.data()),
                       dim * sizeof(float)});
  }
  return entries;
}

Result<PsClient::Handle> PsClient::PushCounts(std::span<const CountSpec> tables, bool prepass) {
  std::vector<Entry> entries;
  for (const CountSpec& spec : tables) {
    if (spec.table < 0 || spec.table >= placement_.num_tables())
      return Status::InvalidArgument("push_counts: unknown table index " +
                                     std::to_string(spec.table));
    if (spec.counts.size() != spec.ids.size())
      return Status::InvalidArgument("push_counts: ids and counts differ in length");
    entries.push_back({spec.table, spec.ids, reinterpret_cast<const std::byte*>(spec.counts.data()),
                       sizeof(uint32_t)});
  }
  return Send(wire::PUSH_COUNTS, wire::TRAIN, entries, {}, nullptr, prepass);
}

Result<PsClient::Handle> PsClient::Send(wire::Op op, wire::PullMode mode,
                                        std::span<const Entry> entries,
                                        std::vector<TablePull*> outs, const wire::SyncStep* sync,
                                        bool prepass, bool routed) {
  const uint32_t g_total = placement_.global_shards();
  const int num_dests = placement_.num_dests();
  std::vector<int> entry_of_table(placement_.num_tables(), -1);
  for (size_t e = 0; e < entries.size(); ++e) {
    if (entry_of_table[entries[e].table] != -1)
      return Status::InvalidArgument("table " + cfg_.tables(entries[e].table).name() +
                                     " appears twice in one request");
    entry_of_table[entries[e].table] = static_cast<int>(e);
  }
  if (!routed) {
    key_rank_.clear();
    for (const Entry& entry : entries) Route(entry.table, entry.ids);
  }

  // Counting sort of all keys by rank (destination, then global shard), over the ranks
  // this request touches only: nothing here is proportional to the number of shards.
  touched_.clear();
  for (uint32_t r : key_rank_)
    if (rank_counts_[r]++ == 0) touched_.push_back(r);
  if (touched_.size() * 16 < g_total) {
    std::sort(touched_.begin(), touched_.end());
  } else {  // dense: a scan is cheaper than a sort, and bounded by 16 x the keys
    touched_.clear();
    for (uint32_t r = 0; r < g_total; ++r)
      if (rank_counts_[r] != 0) touched_.push_back(r);
  }
  // A PUSH of half-precision gradients (ps.wire_precision, docs/design.md §4): each float
  // of the payload goes out as 2 bytes, rounded to nearest even; FP16 gradients are
  // first multiplied by 2^grad_scale_exp, from the request's largest |g|.
  const bool half_push = op == wire::PUSH && wire_ != WeightFormat::kFp32;
  int grad_scale_exp = 0;
  if (half_push && wire_ == WeightFormat::kFp16) {
    float max_abs = 0;
    for (const Entry& entry : entries) {
      const auto* g = reinterpret_cast<const float*>(entry.payload);
      const size_t n = entry.ids.size() * entry.payload_bytes_per_key / sizeof(float);
      for (size_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(g[i]));
    }
    grad_scale_exp = Fp16GradScaleExp(max_abs);
  }
  const float grad_scale = std::ldexp(1.0f, grad_scale_exp);
  // Payload bytes per key as sent.
  auto sent_bpk = [&](const Entry& entry) {
    return half_push ? entry.payload_bytes_per_key / 2 : entry.payload_bytes_per_key;
  };
  // Per rank: first key index and first payload byte within its destination.
  std::vector<uint64_t> dest_keys(num_dests, 0), dest_payload(num_dests, 0);
  for (uint32_t r : touched_) {
    const uint32_t d = dest_of_rank_[r];
    rank_cursor_[r] = static_cast<uint32_t>(dest_keys[d]);
    rank_payload_cursor_[r] = dest_payload[d];
    dest_keys[d] += rank_counts_[r];
    dest_payload[d] += rank_counts_[r] * sent_bpk(entries[entry_of_table[table_of_rank_[r]]]);
  }

  const Handle id = next_id_++;
  Pending p;
  p.target.op = op;
  p.deadline = Clock::now() + timeout_;
  p.target.outs = std::move(outs);
  if (op == wire::PULL) p.target.precision = static_cast<uint32_t>(wire_);
  for (const Entry& entry : entries) p.target.dims.push_back(cfg_.tables(entry.table).dim());
  std::vector<int> plan_of_dest(num_dests, -1);
  std::vector<zmq::message_t> key_msgs(num_dests), payload_msgs(num_dests);
  std::vector<std::byte*> key_bytes(num_dests, nullptr), payload_bytes(num_dests, nullptr);
  std::vector<uint32_t*> items(num_dests, nullptr);
  for (int d = 0; d < num_dests; ++d) {
    if (dest_keys[d] == 0 && sync == nullptr) continue;
    plan_of_dest[d] = static_cast<int>(p.plans.size());
    p.plans.push_back(DestPlan{d, {}});
    key_msgs[d] = frame_pool_->Get(dest_keys[d] * sizeof(uint64_t));
    key_bytes[d] = static_cast<std::byte*>(key_msgs[d].data());
    if (op != wire::PULL) {
      payload_msgs[d] = frame_pool_->Get(dest_payload[d]);
      payload_bytes[d] = static_cast<std::byte*>(payload_msgs[d].data());
    }
  }
  for (DestPlan& plan : p.plans)
    if (op == wire::PULL) {
      plan.sent.items.resize(dest_keys[plan.dest]);
      items[plan.dest] = plan.sent.items.data();
    }
  for (uint32_t r : touched_) {
    const uint32_t t = table_of_rank_[r];
    p.plans[plan_of_dest[dest_of_rank_[r]]].sent.segments.push_back(
        {static_cast<uint32_t>(entry_of_table[t]), t, shard_in_table_of_rank_[r], rank_counts_[r]});
  }
  // Scatter keys (and payload) into their destination frames.
  size_t pos = 0;
  for (const Entry& entry : entries) {
    const size_t bpk = entry.payload_bytes_per_key;
    const size_t out_bpk = sent_bpk(entry);
    const uint64_t* ids = entry.ids.data();
    const size_t n = entry.ids.size();
    for (size_t j = 0; j < n; ++j) {
      const uint32_t r = key_rank_[pos++];
      const uint32_t d = dest_of_rank_[r];
      const uint32_t k = rank_cursor_[r]++;
      std::memcpy(key_bytes[d] + size_t{k} * sizeof(uint64_t), ids + j, sizeof(uint64_t));
      if (op == wire::PULL) {
        items[d][k] = static_cast<uint32_t>(j);
      } else if (half_push) {
        FloatsToHalves(reinterpret_cast<const float*>(entry.payload + j * bpk), bpk / sizeof(float),
                       wire_, grad_scale, payload_bytes[d] + rank_payload_cursor_[r]);
        rank_payload_cursor_[r] += out_bpk;
      } else {
        CopyRow(payload_bytes[d] + rank_payload_cursor_[r], entry.payload + j * bpk, bpk);
        rank_payload_cursor_[r] += bpk;
      }
    }
  }
  for (uint32_t r : touched_) rank_counts_[r] = 0;

  for (const DestPlan& plan : p.plans) {
    wire::RequestHeader h;
    h.set_version(wire::CURRENT_VERSION);
    h.set_op(op);
    h.set_request_id(id);
    h.set_mode(mode);
    if (sync != nullptr) *h.mutable_sync() = *sync;
    if (prepass) h.set_prepass(true);
    if ((op == wire::PULL || op == wire::PUSH) && wire_ != WeightFormat::kFp32)
      h.set_precision(static_cast<uint32_t>(wire_));
    if (half_push && wire_ == WeightFormat::kFp16) h.set_grad_scale_exp(grad_scale_exp);
    h.mutable_segments()->Reserve(static_cast<int>(plan.sent.segments.size()));
    for (const RequestSegment& s : plan.sent.segments) {
      wire::Segment* seg = h.add_segments();
      seg->set_table(s.table);
      seg->set_shard(s.shard);
      seg->set_count(s.count);
    }
    zmq::socket_t& sock = sockets_[plan.dest];
    zmq::message_t header = EncodeFrame(h);
    const bool ok =
        sock.send(header, zmq::send_flags::sndmore | zmq::send_flags::dontwait).has_value() &&
        sock.send(key_msgs[plan.dest], op == wire::PULL
                                           ? zmq::send_flags::dontwait
                                           : zmq::send_flags::sndmore | zmq::send_flags::dontwait)
            .has_value() &&
        (op == wire::PULL ||
         sock.send(payload_msgs[plan.dest], zmq::send_flags::dontwait).has_value());
    if (!ok) return Status::Unavailable("cannot send to " + DescribeDest(plan.dest));
  }
  p.remaining = static_cast<int>(p.plans.size());
  p.done.assign(p.plans.size(), false);
  pending_.emplace(id, std::move(p));
  return id;
}

void PsClient::Complete(Pending& p, size_t plan, const Status& status) {
  if (p.done[plan]) return;
  p.done[plan] = true;
  --p.remaining;
  if (!status.ok() && p.status.ok()) p.status = status;
}

Status PsClient::Receive(int dest) {
  reply_msgs_.clear();
  if (!zmq::recv_multipart(sockets_[dest], std::back_inserter(reply_msgs_),
                           zmq::recv_flags::dontwait))
    return Status::Ok();
  reply_frames_.clear();
  for (const zmq::message_t& f : reply_msgs_) reply_frames_.push_back(f.to_string_view());
  wire::ReplyHeader rh;
  DIN_RETURN_IF_ERROR(DecodeReplyHeader(reply_frames_, DescribeDest(dest), &rh));
  auto it = pending_.find(rh.request_id());
  if (it == pending_.end()) return Status::Ok();  // a late reply to a request that timed out
  Pending& p = it->second;
  size_t plan = 0;
  while (plan < p.plans.size() && p.plans[plan].dest != dest) ++plan;
  // Not a destination of this request, or a second reply to a part already complete
  // (which must not overwrite what the first one delivered).
  if (plan == p.plans.size() || p.done[plan]) return Status::Ok();
  Complete(p, plan,
           DecodeReply(rh, reply_frames_, p.plans[plan].sent, p.target, DescribeDest(dest)));
  return Status::Ok();
}

Status PsClient::Wait(Handle handle) {
  auto it = pending_.find(handle);
  if (it == pending_.end()) return Status::InvalidArgument("unknown request handle");
  std::vector<zmq::pollitem_t> items(sockets_.size());
  for (size_t d = 0; d < sockets_.size(); ++d) items[d] = {sockets_[d].handle(), 0, ZMQ_POLLIN, 0};
  while (it->second.remaining > 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(it->second.deadline - Clock::now());
    if (left.count() <= 0) {
      std::string who;
      for (size_t i = 0; i < it->second.plans.size(); ++i)
        if (!it->second.done[i])
          who += (who.empty() ? "" : "; ") + DescribeDest(it->second.plans[i].dest);
      Status st = Status::Timeout(wire::Op_Name(it->second.target.op) + " request #" +
                                  std::to_string(handle) + ": no reply within " +
                                  std::to_string(timeout_.count()) + " ms from " + who);
      pending_.erase(it);
      return st;
    }
    try {
      zmq::poll(items, left);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal arrived; the deadline still holds
      pending_.erase(it);
      return Status::Unavailable(std::string("polling the servers failed: ") + e.what());
    }
    for (size_t d = 0; d < items.size(); ++d) {
      if (items[d].revents & ZMQ_POLLIN) {
        // Drain what is there; replies to other requests are filed under their handles.
        for (int n = 0; n < 64; ++n) {
          Status st = Receive(static_cast<int>(d));
          if (!st.ok()) {
            // The caller's outputs of this request are not written after it returns.
            pending_.erase(it);
            return st;
          }
          if (!(sockets_[d].get(zmq::sockopt::events) & ZMQ_POLLIN)) break;
        }
      }
    }
  }
  Status st = it->second.status;
  pending_.erase(it);
  return st;
}

Status PsClient::Broadcast(wire::RequestHeader h, Pending p, std::chrono::milliseconds timeout) {
  const Handle id = next_id_++;
  h.set_version(wire::CURRENT_VERSION);
  h.set_op(p.target.op);
  h.set_request_id(id);
  p.deadline = Clock::now() + timeout;
  for (int d = 0; d < placement_.num_dests(); ++d) {
    zmq::message_t header = EncodeFrame(h);
    if (!sockets_[d].send(header, zmq::send_flags::dontwait))
      return Status::Unavailable("cannot send to " + DescribeDest(d));
    p.plans.push_back(DestPlan{d, {}});
  }
  p.remaining = static_cast<int>(p.plans.size());
  p.done.assign(p.plans.size(), false);
  pending_.emplace(id, std::move(p));
  // Wait() names the timeout it waited for in its error; make that this request's.
  const auto saved = timeout_;
  timeout_ = timeout;
  Status st = Wait(id);
  timeout_ = saved;
  return st;
}

Result<std::vector<wire::ShardStats>> PsClient::Stats() {
  std::vector<wire::ShardStats> stats;
  Pending p;
  p.target.op = wire::STATS;
  p.target.stats = &stats;
  DIN_RETURN_IF_ERROR(Broadcast(wire::RequestHeader(), std::move(p), timeout_));
  return stats;
}

Status PsClient::Admit() {
  Pending p;
  p.target.op = wire::ADMIT;
  return Broadcast(wire::RequestHeader(), std::move(p), timeout_);
}

Result<std::vector<wire::DumpPart>> PsClient::Dump(const std::string& dir,
                                                   const DumpOptions& options) {
  if (dir.empty()) return Status::InvalidArgument("dump: no directory given");
  std::vector<wire::DumpPart> parts;
  Pending p;
  p.target.op = wire::DUMP;
  p.target.dump_parts = &parts;
  wire::RequestHeader h;
  h.mutable_dump()->set_dir(dir);
  if (options.with_state) h.mutable_dump()->set_with_state(true);
  if (options.delta) h.mutable_dump()->set_delta(true);
  if (options.mark) h.mutable_dump()->set_mark(true);
  if (!options.base.empty()) h.mutable_dump()->set_incremental(true);
  for (int t = 0; t < cfg_.tables_size() && !options.with_state; ++t) {
    if (cfg_.tables(t).dump_format() == config::TableConfig::TEXT)
      h.mutable_dump()->add_text_tables(static_cast<uint32_t>(t));
    else if (cfg_.tables(t).dump_counts())
      h.mutable_dump()->add_count_tables(static_cast<uint32_t>(t));
  }
  DIN_RETURN_IF_ERROR(Broadcast(std::move(h), std::move(p), options.timeout));
  return parts;
}

Result<uint64_t> PsClient::Load(const std::string& dir, const LoadOptions& options) {
  if (dir.empty()) return Status::InvalidArgument("load: no directory given");
  uint64_t loaded = 0;
  Pending p;
  p.target.op = wire::LOAD;
  p.target.loaded_rows = &loaded;
  wire::RequestHeader h;
  h.mutable_load()->set_dir(dir);
  DIN_RETURN_IF_ERROR(Broadcast(std::move(h), std::move(p), options.timeout));
  return loaded;
}

}  // namespace din
