// Fuzzes what a server lane does with one request: arbitrary bytes, split into frames
// (fuzz_input.h), go through LaneHandler::Handle, i.e. header decoding, validation and
// application, on a small in-memory table that already holds a few rows.
//
// Invariants checked on every input:
//  - Handle never crashes or throws, and answers with a decodable ReplyHeader that
//    echoes the request id;
//  - a refused request (any code but OK) changed no row and created none;
//  - an accepted request touched only the rows of its keys: PULL returns exactly the
//    stored rows (zeros and count 0 for unknown IDs in EVAL mode, which creates nothing),
//    PUSH leaves counts alone, PUSH_COUNTS adds (saturating) to counts and leaves
//    weights alone (with `prepass` it changes nothing until an ADMIT, which the harness
//    then sends: it adds the gathered counts, creating rows for new keys), STATS, PING
//    and ADMIT (with nothing gathered) change nothing.
//  - the half-precision wire (RequestHeader.precision): only FP32, FP16 and BF16 are
//    accepted, half precisions only on PULL and PUSH, grad_scale_exp only on an FP16
//    PUSH within +-120; a PUSH's gradient frame and a PULL reply's values have 4 or 2
//    bytes per value, and the pulled values are the stored ones rounded to nearest
//    (common/half.h's scalar FloatToHalf), the reply saying the precision.
// DUMP and LOAD requests are skipped: they write and read files at paths the request
// names, which a fuzzer must not do to the machine it runs on.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <glog/logging.h>

#include "common/config.h"
#include "common/half.h"
#include "common/hash.h"
#include "common/net/wire.h"
#include "common/placement.h"
#include "ps/lane_handler.h"
#include "tests/fuzz/fuzz_input.h"

namespace din::fuzz {
namespace {

// One server with two lanes; lane 0 serves b/0 (every key), a/1 (a third of them) and
// c/0 (every key). a stores fp16 weights, c bf16 weights with row-wise Adagrad.
constexpr char kConfig[] = R"pb(
  tables {
    name: "b"
    dim: 2
    shards: 1
    optimizer { adagrad {} }
  }
  tables {
    name: "a"
    dim: 4
    shards: 3
    storage: FP16
    optimizer { sgd { learning_rate: 0.5 } }
  }
  tables {
    name: "c"
    dim: 3
    shards: 1
    storage: BF16
    optimizer { rowwise_adagrad {} }
  }
  ps { max_request_keys: 64 }
)pb";
constexpr uint64_t kMaxRequestKeys = 64;

struct Fixture {
  Fixture() : cfg(Parse()), placement(cfg, {2}) {
    for (const auto& t : cfg.tables()) tables.emplace_back(t);
    for (uint64_t k = 1; a1_keys.size() < 3; ++k)
      if (ShardOf(k, 3) == 1) a1_keys.push_back(k);
  }
  static config::TrainConfig Parse() {
    auto cfg = ParseConfig(kConfig, "lane_handler_fuzz");
    CHECK(cfg.ok()) << cfg.status().ToString();
    return *cfg;
  }
  config::TrainConfig cfg;
  Placement placement;
  std::vector<TableSpec> tables;
  std::vector<uint64_t> a1_keys;
};

const Fixture& GetFixture() {
  static const Fixture* fixture = new Fixture();
  return *fixture;
}

using TableShard = std::pair<uint32_t, uint32_t>;
// Every served row: (table, shard) -> key -> count bytes + weights + optimizer state.
using Snapshot = std::map<TableShard, std::map<uint64_t, std::string>>;

// The weights as float32 (exact for every storage format), then the state.
std::string RowBytes(const ShardStore& store, uint32_t row) {
  const uint32_t count = store.Count(row);
  std::string bytes(reinterpret_cast<const char*>(&count), sizeof(count));
  std::vector<float> w(store.dim());
  store.GetWeights(row, w.data());
  bytes.append(reinterpret_cast<const char*>(w.data()), w.size() * sizeof(float));
  bytes.append(reinterpret_cast<const char*>(store.State(row)),
               store.state_floats() * sizeof(float));
  return bytes;
}

Snapshot Take(LaneHandler& lane, const std::vector<TableSpec>& tables) {
  Snapshot snap;
  for (uint32_t t = 0; t < tables.size(); ++t) {
    for (uint32_t s = 0; s < tables[t].shards; ++s) {
      const ShardStore* store = lane.store(static_cast<int>(t), s);
      if (store == nullptr) continue;
      auto& rows = snap[{t, s}];
      for (uint32_t r = 0; r < store->size(); ++r) rows[store->Key(r)] = RowBytes(*store, r);
    }
  }
  return snap;
}

std::vector<zmq::message_t> Frames(const wire::RequestHeader& h,
                                   const std::vector<std::string>& payloads) {
  std::vector<zmq::message_t> frames;
  frames.push_back(EncodeFrame(h));
  for (const auto& p : payloads) frames.emplace_back(p.data(), p.size());
  return frames;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

wire::ReplyHeader MustHandle(LaneHandler& lane, std::vector<zmq::message_t> frames) {
  std::vector<zmq::message_t> reply = lane.Handle(frames);
  wire::ReplyHeader rh;
  CHECK(!reply.empty() && DecodeFrame(reply[0], &rh));
  CHECK_EQ(rh.code(), wire::OK) << rh.error();
  return rh;
}

// A few rows with counts and trained weights in both served shards.
void Populate(LaneHandler& lane, const Fixture& f) {
  wire::RequestHeader h;
  h.set_version(wire::CURRENT_VERSION);
  wire::Segment* b = h.add_segments();
  b->set_table(0);
  b->set_shard(0);
  b->set_count(3);
  wire::Segment* a = h.add_segments();
  a->set_table(1);
  a->set_shard(1);
  a->set_count(f.a1_keys.size());
  wire::Segment* c = h.add_segments();
  c->set_table(2);
  c->set_shard(0);
  c->set_count(2);
  std::vector<uint64_t> keys = {1, 2, 3};
  keys.insert(keys.end(), f.a1_keys.begin(), f.a1_keys.end());
  keys.insert(keys.end(), {1, 9});
  h.set_op(wire::PUSH_COUNTS);
  MustHandle(lane, Frames(h, {Bytes(keys),
                              Bytes(std::vector<uint32_t>{1, 5, 0xfffffff0u, 2, 3, 4, 7, 8})}));
  h.set_op(wire::PUSH);
  std::vector<float> grads(3 * 2 + 3 * 4 + 2 * 3);
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = 0.125f * static_cast<float>(i) - 1.0f;
  MustHandle(lane, Frames(h, {Bytes(keys), Bytes(grads)}));
}

// The (table, shard) of each key of a request the handler accepted: none unless the op
// carries keys. The segments' counts are checked against the keys frame before anything
// is allocated (a header may declare billions of keys).
std::vector<TableShard> KeyOwners(const wire::RequestHeader& h,
                                  const std::vector<zmq::message_t>& request) {
  if (h.op() != wire::PULL && h.op() != wire::PUSH && h.op() != wire::PUSH_COUNTS) {
    CHECK_EQ(h.segments_size(), 0) << wire::Op_Name(h.op()) << " accepted with segments";
    return {};
  }
  uint64_t total = 0;
  for (const auto& seg : h.segments()) {
    CHECK_LE(seg.count(), request[1].size() / sizeof(uint64_t)) << "segment larger than its keys";
    total += seg.count();
  }
  CHECK_EQ(total * sizeof(uint64_t), request[1].size()) << "accepted keys frame of another size";
  std::vector<TableShard> owners;
  owners.reserve(total);
  for (const auto& seg : h.segments())
    for (uint64_t i = 0; i < seg.count(); ++i) owners.emplace_back(seg.table(), seg.shard());
  return owners;
}

void CheckAccepted(const wire::RequestHeader& h, const std::vector<zmq::message_t>& request,
                   const std::vector<zmq::message_t>& reply, const wire::ReplyHeader& rh,
                   const Snapshot& before, LaneHandler& lane, const Fixture& f) {
  const Snapshot after = Take(lane, f.tables);
  const std::vector<TableShard> owners = KeyOwners(h, request);
  std::vector<uint64_t> keys;
  std::set<std::pair<TableShard, uint64_t>> touched;
  if (h.op() == wire::PULL || h.op() == wire::PUSH || h.op() == wire::PUSH_COUNTS) {
    CHECK_EQ(request[1].size(), owners.size() * sizeof(uint64_t));
    keys.resize(owners.size());
    if (!keys.empty()) std::memcpy(keys.data(), request[1].data(), request[1].size());
    for (size_t k = 0; k < keys.size(); ++k) touched.insert({owners[k], keys[k]});
  }
  const bool may_create = h.op() == wire::PUSH || h.op() == wire::PUSH_COUNTS ||
                          (h.op() == wire::PULL && h.mode() == wire::TRAIN);
  // Rows outside the request are untouched; rows are only ever created for its keys.
  for (const auto& [where, rows] : after) {
    const auto& old_rows = before.at(where);
    for (const auto& [key, bytes] : rows) {
      auto old = old_rows.find(key);
      const bool in_request = touched.count({where, key}) > 0;
      if (old == old_rows.end()) {
        CHECK(in_request && may_create) << "row " << key << " created by " << wire::Op_Name(h.op());
      } else if (!in_request || h.op() == wire::PULL) {
        CHECK(old->second == bytes) << "row " << key << " changed by " << wire::Op_Name(h.op());
      }
    }
    CHECK_GE(rows.size(), old_rows.size());
  }

  // The precision fields of an accepted request.
  const uint32_t precision = h.precision();
  CHECK(precision == wire::FP32 || precision == wire::FP16 || precision == wire::BF16)
      << "accepted precision " << precision;
  CHECK(precision == wire::FP32 || h.op() == wire::PULL || h.op() == wire::PUSH)
      << wire::Op_Name(h.op()) << " accepted with precision " << precision;
  if (h.has_grad_scale_exp()) {
    CHECK(h.op() == wire::PUSH && precision == wire::FP16) << "grad_scale_exp accepted";
    CHECK_LE(std::abs(h.grad_scale_exp()), 120);
  }
  const size_t value_bytes = precision == wire::FP32 ? 4 : 2;
  if (h.op() == wire::PUSH) {
    size_t floats = 0;
    for (const auto& o : owners) floats += f.tables[o.first].dim;
    CHECK_EQ(request[2].size(), floats * value_bytes) << "accepted gradients of another size";
  }
  if (h.op() != wire::PULL) CHECK(!rh.has_precision()) << "precision on a reply without values";

  switch (h.op()) {
    case wire::PULL: {
      CHECK_EQ(reply.size(), 3u);
      size_t floats = 0;
      for (const auto& o : owners) floats += f.tables[o.first].dim;
      CHECK_EQ(reply[1].size(), floats * value_bytes);
      CHECK_EQ(rh.precision(), precision) << "PULL reply in another precision";
      CHECK_EQ(reply[2].size(), keys.size() * sizeof(uint32_t));
      const auto* values = static_cast<const char*>(reply[1].data());
      const auto* counts = static_cast<const char*>(reply[2].data());
      size_t off = 0;
      for (size_t k = 0; k < keys.size(); ++k) {
        const uint32_t dim = f.tables[owners[k].first].dim;
        const ShardStore* store = lane.store(static_cast<int>(owners[k].first), owners[k].second);
        const uint32_t row = store->Find(keys[k]);
        std::string want(dim * value_bytes + sizeof(uint32_t), '\0');
        if (row == ShardStore::kNoRow) {
          CHECK_EQ(h.mode(), wire::EVAL);
        } else {
          const uint32_t count = store->Count(row);
          std::vector<float> w(dim);
          store->GetWeights(row, w.data());
          for (uint32_t j = 0; j < dim; ++j) {
            if (precision == wire::FP32) {
              std::memcpy(want.data() + j * 4, &w[j], 4);
            } else {
              const uint16_t v = FloatToHalf(
                  w[j], precision == wire::FP16 ? WeightFormat::kFp16 : WeightFormat::kBf16);
              std::memcpy(want.data() + j * 2, &v, 2);
            }
          }
          std::memcpy(want.data() + dim * value_bytes, &count, sizeof(count));
        }
        std::string got(values + off, dim * value_bytes);
        got.append(counts + k * sizeof(uint32_t), sizeof(uint32_t));
        CHECK(got == want) << "PULL returned another row than stored for key " << keys[k];
        off += dim * value_bytes;
      }
      break;
    }
    case wire::PUSH:
    case wire::PUSH_COUNTS: {
      CHECK_EQ(reply.size(), 1u);
      // A synchronous step without samples has nothing to apply: no row changes, none
      // is created.
      if (h.has_sync() && h.sync().samples() == 0) {
        CHECK(before == after) << "a synchronous step without samples changed rows";
        break;
      }
      // PREPASS counts are gathered, not applied, until ADMIT: then every key of the
      // request has a row whose count grew by its counts, and no other row changed.
      if (h.prepass()) {
        CHECK(before == after) << "PREPASS counts changed rows before ADMIT";
        wire::RequestHeader admit;
        admit.set_version(wire::CURRENT_VERSION);
        admit.set_op(wire::ADMIT);
        MustHandle(lane, Frames(admit, {}));
        const Snapshot admitted = Take(lane, f.tables);
        std::map<std::pair<TableShard, uint64_t>, uint64_t> added;
        for (size_t k = 0; k < keys.size(); ++k) {
          uint32_t delta;
          std::memcpy(&delta, static_cast<const char*>(request[2].data()) + k * 4, 4);
          added[{owners[k], keys[k]}] += delta;
        }
        for (const auto& [where, rows] : admitted) {
          for (const auto& [key, bytes] : rows) {
            auto old = before.at(where).find(key);
            auto it = added.find({where, key});
            if (it == added.end()) {
              CHECK(old != before.at(where).end() && old->second == bytes)
                  << "ADMIT changed or created row " << key << " outside the counts";
              continue;
            }
            uint32_t old_count = 0, count = 0;
            if (old != before.at(where).end()) std::memcpy(&old_count, old->second.data(), 4);
            std::memcpy(&count, bytes.data(), 4);
            CHECK_EQ(count, std::min<uint64_t>(UINT32_MAX, old_count + it->second))
                << "ADMIT count of key " << key;
          }
        }
        for (const auto& [wk, n] : added) CHECK(admitted.at(wk.first).count(wk.second) > 0);
        break;
      }
      std::map<std::pair<TableShard, uint64_t>, uint64_t> added;
      if (h.op() == wire::PUSH_COUNTS) {
        CHECK_EQ(request[2].size(), keys.size() * sizeof(uint32_t));
        for (size_t k = 0; k < keys.size(); ++k) {
          uint32_t delta;
          std::memcpy(&delta, static_cast<const char*>(request[2].data()) + k * 4, 4);
          added[{owners[k], keys[k]}] += delta;
        }
      }
      for (const auto& wk : touched) {
        const std::string& now = after.at(wk.first).at(wk.second);
        auto old = before.at(wk.first).find(wk.second);
        uint32_t old_count = 0, count = 0;
        if (old != before.at(wk.first).end()) std::memcpy(&old_count, old->second.data(), 4);
        std::memcpy(&count, now.data(), 4);
        if (h.op() == wire::PUSH) {
          CHECK_EQ(count, old_count) << "PUSH changed the count of key " << wk.second;
        } else {
          const uint64_t want = std::min<uint64_t>(UINT32_MAX, old_count + added[wk]);
          CHECK_EQ(count, want) << "PUSH_COUNTS count of key " << wk.second;
          if (old != before.at(wk.first).end())
            CHECK(now.substr(4) == old->second.substr(4))
                << "PUSH_COUNTS changed the weights of key " << wk.second;
        }
      }
      break;
    }
    case wire::STATS: {
      CHECK_EQ(reply.size(), 1u);
      CHECK_EQ(static_cast<size_t>(rh.stats_size()), after.size());
      for (const auto& st : rh.stats())
        CHECK_EQ(st.rows(), after.at({st.table(), st.shard()}).size());
      CHECK(before == after);
      break;
    }
    default:
      CHECK_EQ(reply.size(), 1u);
      CHECK(before == after);
      break;
  }
}

}  // namespace
}  // namespace din::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  using namespace din::fuzz;
  const Fixture& f = GetFixture();
  FuzzInput in(data, size);
  std::vector<zmq::message_t> request;
  for (const std::string& frame : SplitFrames(&in, 0, 4))
    request.emplace_back(frame.data(), frame.size());

  wire::RequestHeader h;
  const bool decoded = !request.empty() && DecodeFrame(request[0], &h);
  if (decoded && (h.op() == wire::DUMP || h.op() == wire::LOAD)) return 0;

  LaneHandler lane(f.tables, f.placement, 0, 0, kMaxRequestKeys);
  Populate(lane, f);
  const Snapshot before = Take(lane, f.tables);

  // Process() keeps a synchronous push's frames (it moves them): check against a copy.
  std::vector<zmq::message_t> sent;
  for (const zmq::message_t& frame : request) sent.emplace_back(frame.data(), frame.size());
  LaneHandler::Outcome out = lane.Process(request);
  std::vector<zmq::message_t> reply;
  if (out.held_slot >= 0) {
    // A valid synchronous push: held until the step's other workers push, or (a step of
    // one worker) applied at once and its reply released.
    CHECK(decoded && h.has_sync() && h.op() == wire::PUSH);
    if (out.released.empty()) {
      CHECK_GT(h.sync().workers(), 1u);
      CHECK(Take(lane, f.tables) == before) << "a held push changed rows";
      return 0;
    }
    CHECK_EQ(out.released.size(), 1u);
    reply = std::move(out.released[0].second);
  } else {
    CHECK(out.released.empty());
    reply = std::move(out.reply);
  }
  CHECK(!reply.empty());
  wire::ReplyHeader rh;
  CHECK(DecodeFrame(reply[0], &rh)) << "undecodable reply header";
  CHECK_EQ(rh.version(), static_cast<uint32_t>(wire::CURRENT_VERSION));
  CHECK_EQ(rh.server_rank(), 0u);
  if (decoded) CHECK_EQ(rh.request_id(), h.request_id());
  if (rh.code() != wire::OK) {
    CHECK(decoded || rh.code() == wire::INVALID_REQUEST);
    CHECK(!rh.error().empty());
    CHECK_EQ(reply.size(), 1u);
    CHECK(Take(lane, f.tables) == before) << "a refused request changed rows: " << rh.error();
    return 0;
  }
  CHECK(decoded) << "an undecodable request was accepted";
  CHECK_EQ(h.version(), static_cast<uint32_t>(wire::CURRENT_VERSION));
  CheckAccepted(h, sent, reply, rh, before, lane, f);
  return 0;
}
