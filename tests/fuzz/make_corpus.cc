// Writes the seed corpus of the fuzz harnesses: a handful of valid and near-valid inputs
// per harness, the same bytes on every run.
//   fuzz_make_corpus tests/fuzz/corpus launch/configs/*.pbtxt
// (the config files given are copied in as config seeds).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "common/hash.h"
#include "common/proto/wire.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace din::fuzz {
namespace {

namespace fs = std::filesystem;

fs::path g_out;

void Write(const std::string& harness, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_out / harness;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out.good()) {
    std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

template <typename T>
std::string Raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

wire::Segment Seg(uint32_t table, uint32_t shard, uint64_t count) {
  wire::Segment s;
  s.set_table(table);
  s.set_shard(shard);
  s.set_count(count);
  return s;
}

std::string Header(wire::Op op, const std::vector<wire::Segment>& segs,
                   wire::PullMode mode = wire::TRAIN, uint32_t version = wire::CURRENT_VERSION) {
  wire::RequestHeader h;
  h.set_version(version);
  h.set_op(op);
  h.set_request_id(42);
  if (mode != wire::TRAIN) h.set_mode(mode);
  for (const auto& s : segs) *h.add_segments() = s;
  return h.SerializeAsString();
}

// lane_handler_fuzz.cc: lane 0 serves table b (dim 2, 1 shard) and shard 1 of table a
// (dim 4, 3 shards); at most 64 keys; keys 1, 2, 3 and the first three of a/1 exist.
void LaneHandler() {
  std::vector<uint64_t> a1, a0;
  for (uint64_t k = 1; a1.size() < 4 || a0.size() < 1; ++k) {
    if (ShardOf(k, 3) == 1 && a1.size() < 4) a1.push_back(k);
    if (ShardOf(k, 3) == 0 && a0.empty()) a0.push_back(k);
  }
  const std::string h = "lane_handler";
  auto w = [&h](const std::string& name, const std::vector<std::string>& frames) {
    Write(h, name, JoinFrames(frames, 0));
  };
  const std::vector<uint64_t> keys = {1, 2, 9, a1[0], a1[3]};
  const auto segs = std::vector<wire::Segment>{Seg(0, 0, 3), Seg(1, 1, 2)};
  w("pull_train", {Header(wire::PULL, segs), Raw(keys)});
  w("pull_eval", {Header(wire::PULL, segs, wire::EVAL), Raw(keys)});
  w("push", {Header(wire::PUSH, segs), Raw(keys), Raw(std::vector<float>(3 * 2 + 2 * 4, 0.5f))});
  // Synchronous steps: one of two workers (held) and a step of one worker (applied).
  auto sync_header = [&segs](uint32_t workers) {
    wire::RequestHeader sh;
    sh.ParseFromString(Header(wire::PUSH, segs));
    sh.mutable_sync()->set_step(7);
    sh.mutable_sync()->set_worker(0);
    sh.mutable_sync()->set_workers(workers);
    sh.mutable_sync()->set_samples(3);
    return sh.SerializeAsString();
  };
  w("push_sync_held", {sync_header(2), Raw(keys), Raw(std::vector<float>(3 * 2 + 2 * 4, 0.5f))});
  w("push_sync_one", {sync_header(1), Raw(keys), Raw(std::vector<float>(3 * 2 + 2 * 4, 0.5f))});
  w("push_repeats", {Header(wire::PUSH, {Seg(0, 0, 3)}), Raw(std::vector<uint64_t>{2, 2, 2}),
                     Raw(std::vector<float>{1, -1, 1e30f, -1e30f, 0.25f, 3})});
  w("push_counts", {Header(wire::PUSH_COUNTS, segs), Raw(keys),
                    Raw(std::vector<uint32_t>{1, 0xffffffffu, 3, 4, 5})});
  // PREPASS counts (gathered, then admitted by the ADMIT the harness sends) and an ADMIT
  // with nothing gathered.
  auto prepass_header = [&segs]() {
    wire::RequestHeader ph;
    ph.ParseFromString(Header(wire::PUSH_COUNTS, segs));
    ph.set_prepass(true);
    return ph.SerializeAsString();
  };
  w("push_counts_prepass",
    {prepass_header(), Raw(keys), Raw(std::vector<uint32_t>{1, 0xffffffffu, 3, 4, 5})});
  // The half-precision wire: pulls and pushes in FP16 (scaled) and BF16, and refusals.
  auto with_precision = [](std::string header, uint32_t precision, int scale_exp = 0) {
    wire::RequestHeader ph;
    ph.ParseFromString(header);
    ph.set_precision(precision);
    if (scale_exp != 0) ph.set_grad_scale_exp(scale_exp);
    return ph.SerializeAsString();
  };
  const std::string half_grads = Raw(std::vector<uint16_t>(3 * 2 + 2 * 4, 0x3c00));
  w("pull_fp16", {with_precision(Header(wire::PULL, segs), wire::FP16), Raw(keys)});
  w("pull_eval_bf16",
    {with_precision(Header(wire::PULL, segs, wire::EVAL), wire::BF16), Raw(keys)});
  w("push_fp16_scaled",
    {with_precision(Header(wire::PUSH, segs), wire::FP16, 12), Raw(keys), half_grads});
  w("push_bf16", {with_precision(Header(wire::PUSH, segs), wire::BF16), Raw(keys), half_grads});
  w("push_sync_fp16", {with_precision(sync_header(1), wire::FP16, -3), Raw(keys), half_grads});
  w("push_fp16_float_frame", {with_precision(Header(wire::PUSH, segs), wire::FP16), Raw(keys),
                              Raw(std::vector<float>(3 * 2 + 2 * 4, 0.5f))});
  w("pull_unknown_precision", {with_precision(Header(wire::PULL, segs), 5), Raw(keys)});
  w("push_scale_out_of_range",
    {with_precision(Header(wire::PUSH, segs), wire::FP16, 121), Raw(keys), half_grads});
  w("admit", {Header(wire::ADMIT, {})});
  w("stats", {Header(wire::STATS, {})});
  w("ping", {Header(wire::PING, {})});
  w("bad_version", {Header(wire::PULL, segs, wire::TRAIN, 2), Raw(keys)});
  w("keys_short", {Header(wire::PULL, segs), Raw(keys).substr(0, 39)});
  w("grads_long", {Header(wire::PUSH, segs), Raw(keys), Raw(std::vector<float>(15, 0.5f))});
  w("wrong_shard", {Header(wire::PULL, {Seg(1, 1, 1)}), Raw(a0)});
  w("not_served", {Header(wire::PULL, {Seg(1, 0, 1)}), Raw(a0)});
  w("too_many_keys", {Header(wire::PULL, {Seg(0, 0, 65)}), Raw(std::vector<uint64_t>(65, 7))});
  w("unknown_table", {Header(wire::PULL, {Seg(5, 0, 1)}), Raw(std::vector<uint64_t>{1})});
  w("push_two_frames", {Header(wire::PUSH, segs), Raw(keys)});
  w("no_frames", {});
  w("garbage", {"\xff\xff\xff\xff\x0f garbage", "x"});
}

// ps_reply_fuzz.cc: op, flags, id-count bytes, then reply frames (at least one).
std::vector<uint64_t> ReplyIds(int t, int n) {
  std::vector<uint64_t> ids;
  for (int i = 0; i < n; ++i)
    ids.push_back(static_cast<uint64_t>(i % (n / 2 + 1)) * 1000003 + 17 + t);
  return ids;
}

void PsReply() {
  const std::string name = "ps_reply";
  enum { kPullTrain, kPullEval, kPush, kPushCounts, kStats, kDump, kLoad };
  auto w = [&name](const std::string& file, int op, int flags, int n0, int n1,
                   const std::vector<std::string>& frames) {
    std::string bytes = {static_cast<char>(op), static_cast<char>(flags), static_cast<char>(n0 - 1),
                         static_cast<char>(n1 - 1)};
    Write(name, file, bytes + JoinFrames(frames, 1));
  };
  auto reply = [](wire::Code code) {
    wire::ReplyHeader rh;
    rh.set_version(wire::CURRENT_VERSION);
    if (code != wire::OK) {
      rh.set_code(code);
      rh.set_error("refused");
    }
    return rh;
  };
  const int n0 = 5, n1 = 3;
  const std::vector<uint64_t> ids0 = ReplyIds(0, n0), ids1 = ReplyIds(1, n1);
  const size_t u0 = std::set<uint64_t>(ids0.begin(), ids0.end()).size();
  const size_t u1 = std::set<uint64_t>(ids1.begin(), ids1.end()).size();
  std::vector<float> values(u0 * 3 + u1);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.25f;
  std::vector<uint32_t> counts(u0 + u1);
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = static_cast<uint32_t>(i * 3);
  const std::string ok = reply(wire::OK).SerializeAsString();
  w("pull_ok", kPullTrain, 1, n0, n1, {ok, Raw(values), Raw(counts)});
  w("pull_eval_ok", kPullEval, 1, n0, n1, {ok, Raw(values), Raw(counts)});
  w("pull_short_values", kPullTrain, 1, n0, n1, {ok, Raw(values).substr(4), Raw(counts)});
  w("pull_two_frames", kPullTrain, 1, n0, n1, {ok, Raw(values)});
  // Half-precision pulls (flags bits 1-2: FP16 = 1, BF16 = 2): a reply in the asked
  // precision, one that does not say it, and one of float32 size.
  {
    std::vector<uint16_t> halves(values.size());
    for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(0x3c00 + i);
    wire::ReplyHeader rh = reply(wire::OK);
    rh.set_precision(wire::FP16);
    w("pull_fp16_ok", kPullTrain, 1 | 1 << 1, n0, n1,
      {rh.SerializeAsString(), Raw(halves), Raw(counts)});
    rh.set_precision(wire::BF16);
    w("pull_bf16_ok", kPullEval, 1 | 2 << 1, n0, n1,
      {rh.SerializeAsString(), Raw(halves), Raw(counts)});
    w("pull_fp16_unsaid", kPullTrain, 1 | 1 << 1, n0, n1, {ok, Raw(halves), Raw(counts)});
    rh.set_precision(wire::FP16);
    w("pull_fp16_float_size", kPullTrain, 1 | 1 << 1, n0, n1,
      {rh.SerializeAsString(), Raw(values), Raw(counts)});
  }
  w("pull_refused", kPullTrain, 1, n0, n1, {reply(wire::RESOURCE_EXHAUSTED).SerializeAsString()});
  {
    wire::ReplyHeader other = reply(wire::OK);
    other.set_request_id(123456);
    w("pull_other_id", kPullTrain, 0, n0, n1,
      {other.SerializeAsString(), Raw(values), Raw(counts)});
  }
  w("push_ok", kPush, 1, n0, n1, {ok});
  w("push_internal", kPush, 1, n0, n1, {reply(wire::INTERNAL).SerializeAsString()});
  w("push_invalid", kPush, 1, n0, n1, {reply(wire::INVALID_REQUEST).SerializeAsString()});
  // A code from a newer server (99): Protobuf keeps it among the unknown fields.
  w("push_unknown_code", kPush, 1, n0, n1,
    {reply(wire::OK).SerializeAsString() + std::string{'\x18', 99}});
  w("push_counts_ok", kPushCounts, 1, 2, 2, {ok});
  {
    wire::ReplyHeader rh = reply(wire::OK);
    for (uint32_t s = 0; s < 3; ++s) {
      wire::ShardStats* st = rh.add_stats();
      st->set_table(s < 2 ? 0 : 1);
      st->set_shard(s % 2);
      st->set_rows(100 + s);
      st->set_bytes(4096);
      st->set_row_bytes(28);
    }
    w("stats_ok", kStats, 1, 1, 1, {rh.SerializeAsString()});
  }
  {
    wire::ReplyHeader rh = reply(wire::OK);
    wire::DumpPart* part = rh.add_dump_parts();
    part->set_table(0);
    part->set_shard(1);
    part->set_rows(5);
    wire::DumpFile* f = part->add_files();
    f->set_name("x/part-00001-of-00002.emb.npy");
    f->set_bytes(188);
    f->set_xxh64(0x1234);
    w("dump_ok", kDump, 1, 1, 1, {rh.SerializeAsString()});
  }
  {
    wire::ReplyHeader rh = reply(wire::OK);
    rh.set_loaded_rows(7);
    w("load_ok", kLoad, 1, 1, 1, {rh.SerializeAsString()});
  }
  w("malformed_header", kPullTrain, 1, n0, n1, {"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"});
}

void LineParser() {
  auto w = [](const std::string& name, int layout, int max_history, const std::string& text) {
    Write("line_parser", name,
          std::string{static_cast<char>(layout), static_cast<char>(max_history)} + text);
  };
  w("din_tsv", 0, 0,
    "1\t10\t20\t30\t1,2,3\t4,5,6\n0\t11\t21\t31\t\t\n1\t18446744073709551615\t0\t1\t7\t8\r\n");
  w("din_tsv_history", 0, 2, "0\t5\t6\t7\t1,2,3,4\t5,6,7,8\n");
  w("din_tsv_bad", 0, 0,
    "2\t10\t20\t30\t\t\n1\t10\t20\t30\t1,2\t3\n1\t18446744073709551616\t20\t30\t\t\n"
    "1\t-1\t2\t3\t\t\n1\t1\t2\t3\t\t\t\n1\t1\t2\n\n1\t1\t2\t3\t1,,2\t3,4,5\n");
  w("schema", 1, 3,
    "user-a 1|2|3 1 100 200 5,6 7,8 h9 x\nuser-b  0 300 400   morning extra\n"
    "user-c 1||2 1 1 2 3 4 h x\nuser-d 1 1 1 2 3,4 5 h x\n");
  w("no_group", 2, 1, "1\t10\t20\t30\t1,2\t3,4\n0\t\t20\t30\t\t\n");
}

void Reader() {
  auto w = [](const std::string& name, int layout, int line_bytes, int workers, int batch,
              int shuffle, const std::string& text) {
    Write("reader", name,
          std::string{static_cast<char>(layout), static_cast<char>(line_bytes),
                      static_cast<char>(workers - 1), static_cast<char>(batch - 1),
                      static_cast<char>(shuffle)} +
              text);
  };
  std::string din;
  for (int i = 0; i < 20; ++i) {
    din += std::to_string(i % 2) + "\t" + std::to_string(100 + i) + "\t" + std::to_string(i * 7) +
           "\t" + std::to_string(i % 3) + "\t";
    for (int j = 0; j < i % 4; ++j) din += (j ? "," : "") + std::to_string(j + i);
    din += "\t";
    for (int j = 0; j < i % 4; ++j) din += (j ? "," : "") + std::to_string(j);
    din += i % 5 == 0 ? "\r\n" : "\n";
  }
  w("din_tsv", 0, 2, 1, 4, 0, din);
  w("din_tsv_workers", 0, 2, 3, 3, 2, din);
  w("din_tsv_short_lines", 0, 0, 2, 2, 1, din);
  w("bad_and_blank", 0, 1, 2, 3, 3,
    "1\t1\t2\t3\t\t\n\n\r\n2\t1\t2\t3\t\t\n" + std::string(60, '9') + "\n0\t4\t5\t6\t7\t8");
  w("schema", 1, 2, 2, 2, 2,
    "user-a 1|2|3 1 100 200 5,6 7,8 h9 x\nuser-b  0 300 400   morning extra\n"
    "user-c 1 0 1 2 3 4 h x\n\nuser-d 1 1 1 2 3,4 5 h x\n");
}

void Config(const std::vector<std::string>& files) {
  Write("config", "minimal", "tables { name: \"t\" dim: 8 }\n");
  Write("config", "optimizers",
        "tables { name: \"a\" dim: 4 shards: 3 optimizer { sgd { learning_rate: 0.5 } } }\n"
        "tables { name: \"b\" dim: 2 optimizer { adam { beta1: 0.5 beta2: 0.9 } } }\n"
        "tables { name: \"c\" dim: 1 optimizer { ftrl { alpha: 1 l1: 0.1 } } "
        "initializer { kind: CONSTANT value: 0.25 } }\n"
        "ps { threads: 2 request_timeout_ms: 100 max_request_keys: 10 }\n");
  Write("config", "schema",
        "tables { name: \"uid\" dim: 4 }\ntables { name: \"item\" dim: 4 }\n"
        "data { format: SCHEMA label_column: 0 group_field: \"uid\" column_separator: \",\"\n"
        "  fields { name: \"uid\" column: 1 kind: USER hash: true }\n"
        "  fields { name: \"item\" column: 2 kind: CANDIDATE }\n"
        "  fields { name: \"hist\" column: 3 kind: BEHAVIOR aligned_with: \"item\" separator: "
        "\"|\" }\n"
        "}\n");
  Write("config", "bad_dim", "tables { name: \"t\" dim: 0 }\n");
  Write("config", "duplicate", "tables { name: \"t\" dim: 1 }\ntables { name: \"t\" dim: 2 }\n");
  Write("config", "syntax", "tables { name: \"t\" dim: 8 \n");
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Write("config", "file_" + fs::path(f).filename().string(), text);
  }
}

}  // namespace
}  // namespace din::fuzz

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [CONFIG.pbtxt...]\n", argv[0]);
    return 2;
  }
  din::fuzz::g_out = argv[1];
  din::fuzz::LaneHandler();
  din::fuzz::PsReply();
  din::fuzz::LineParser();
  din::fuzz::Reader();
  din::fuzz::Config(std::vector<std::string>(argv + 2, argv + argc));
  return 0;
}
