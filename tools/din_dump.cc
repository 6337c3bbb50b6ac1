// din_dump: reads an embedding dump (layout: common/dump_format.h).
//
//   din_dump inspect DIR [--servers S]           tables, rows, dims, balance; verifies
//                                                every file
//   din_dump lookup DIR --table T --ids 1,2,3    prints "id<TAB>v1 v2 ..." per ID
//   din_dump to-text DIR --table T               prints every row of T the same way
//   din_dump export CKPT OUT                     the model of checkpoint CKPT, for others
//   din_dump merge BASE DELTA... OUT             an incremental series as one full dump
//
// inspect checks that _SUCCESS exists, that every file the MANIFEST lists is there with
// its size and XXH64, that NPY headers have the dtype and shape the MANIFEST implies,
// that text parts have one well-formed line per row, that every ID (a delta's removed
// IDs too) sits in the part its shard names, and that a series' row numbers ascend.
// It exits non-zero on any problem, after listing all of them.
// It also reports the balance, with the figures of the training summary's `shard_rows`
// and `server_bytes` (worker/report.h ServerFiguresOf, the same computation): per table
// the rows per shard (min, max, coefficient of variation), and the dump's bytes per
// server under the job's placement (common/placement.h) when the number of servers is
// known: a checkpoint records it, `--servers S` gives it for a dump.
// Given a checkpoint (ckpt-STEP, worker/checkpoint.h), inspect also verifies CHECKPOINT,
// _SUCCESS and every worker state, then inspects its tables/ as a dump; lookup and
// to-text read its tables/.
// export writes what `launch/din-train --export` writes (worker/export.h), without
// servers: OUT/model.json and OUT/dense/*.npy from CKPT's worker states (the Dice
// statistics averaged over its workers), and OUT/embeddings/, a dump of CKPT's tables
// (their .ids.npy and .emb.npy parts, with a MANIFEST and _SUCCESS); it refuses a
// checkpoint whose embeddings are not float32.
// merge reads the base (a full dump whose MANIFEST names itself as base) and the deltas
// in order (each naming that base and, as parent, the dump before it; all verified) and
// writes OUT: per part, the base's rows, then per delta the IDs its .removed.npy lists
// (evicted since the dump before) dropped and its rows put at their row numbers
// (.rows.npy: replacing the row of an ID it has, or taking a new or freed row number),
// written in row-number order as the servers write a full dump, so OUT equals a full
// dump taken at the last delta's step, byte for byte (MANIFEST: the last delta's step
// and config, no lineage; no .rows.npy). An ID evicted and created again between two
// dumps is in both lists of the delta and ends as its new row. NPY dumps only.
// lookup finds an ID's part with ShardOf(id, shards) (common/hash.h) and exits 1 when
// an ID is not in the table.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "common/dump_format.h"
#include "common/hash.h"
#include "common/placement.h"
#include "common/proto/wire.pb.h"
#include "common/status.h"
#include "worker/checkpoint.h"
#include "worker/export.h"
#include "worker/report.h"

namespace din {
namespace {

constexpr size_t kChunk = 1 << 20;

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

Result<File> Open(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  return f;
}

Result<Manifest> LoadDump(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("no " + path + " (not a dump directory?)");
  std::stringstream ss;
  ss << in.rdbuf();
  DIN_ASSIGN_OR_RETURN(Manifest m, ParseManifest(ss.str(), path));
  if (!std::filesystem::exists(dir + "/" + kSuccessName))
    return Status::NotFound("no " + dir + "/" + kSuccessName +
                            ": the dump is incomplete (still being written, or it failed)");
  return m;
}

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void AppendRow(uint64_t id, const float* w, uint32_t dim, std::string* out) {
  char buf[32];
  out->append(buf, std::to_chars(buf, buf + sizeof(buf), id).ptr);
  for (uint32_t d = 0; d < dim; ++d) {
    out->push_back(d == 0 ? '\t' : ' ');
    out->append(buf, std::to_chars(buf, buf + sizeof(buf), w[d]).ptr);
  }
}

// Parses one text-part line "id<TAB>v1 v2 ...".
bool ParseTextRow(const std::string& line, uint32_t dim, uint64_t* id, std::vector<float>* w) {
  const char* p = line.data();
  const char* end = p + line.size();
  auto r = std::from_chars(p, end, *id);
  if (r.ec != std::errc() || r.ptr == end || *r.ptr != '\t') return false;
  p = r.ptr + 1;
  w->resize(dim);
  for (uint32_t d = 0; d < dim; ++d) {
    if (d > 0) {
      if (p == end || *p != ' ') return false;
      ++p;
    }
    auto f = std::from_chars(p, end, (*w)[d]);
    if (f.ec != std::errc()) return false;
    p = f.ptr;
  }
  return p == end;
}

// ---- inspect -----------------------------------------------------------------------

class Inspector {
 public:
  // `servers`: the job's number of servers, 0 when not known.
  Inspector(std::string dir, int servers) : dir_(std::move(dir)), servers_(servers) {}

  int Run() {
    Result<Manifest> m = LoadDump(dir_);
    if (!m.ok()) {
      std::fprintf(stderr, "din_dump inspect: %s\n", m.status().ToString().c_str());
      return 1;
    }
    std::printf("dump %s: step %llu, %zu tables\n", dir_.c_str(),
                static_cast<unsigned long long>(m->step), m->tables.size());
    uint64_t files = 0;
    const ServerFigures balance = Balance(*m);
    for (size_t i = 0; i < m->tables.size(); ++i) {
      const ManifestTable& t = m->tables[i];
      std::printf("  table %s: dim %u, shards %u, rows %llu, format %s%s\n", t.name.c_str(), t.dim,
                  t.shards, static_cast<unsigned long long>(t.rows), t.text ? "text" : "npy",
                  t.counts ? " + counts" : "");
      const ShardBalance& b = balance.balance[i];
      std::printf("    rows per shard: min %llu, max %llu, cv %.4f\n",
                  static_cast<unsigned long long>(b.min), static_cast<unsigned long long>(b.max),
                  b.cv);
      uint64_t rows = 0;
      for (const ManifestPart& p : t.parts) {
        rows += p.rows;
        CheckPart(*m, t, p);
        files += p.files.size();
      }
      if (rows != t.rows)
        Problem("table " + t.name + ": parts hold " + std::to_string(rows) + " rows, table line " +
                std::to_string(t.rows));
    }
    if (servers_ > 0) {
      std::printf("  dump bytes per server (%d servers):", servers_);
      uint64_t lo = UINT64_MAX, hi = 0;
      for (uint64_t b : balance.server_bytes) {
        std::printf(" %llu", static_cast<unsigned long long>(b));
        lo = std::min(lo, b);
        hi = std::max(hi, b);
      }
      std::printf("; max / min %.4f\n", lo > 0 ? static_cast<double>(hi) / lo : 0.0);
    }
    if (problems_ > 0) {
      std::fprintf(stderr, "din_dump inspect: %s: %d problem(s)\n", dir_.c_str(), problems_);
      return 1;
    }
    std::printf("OK: %llu files verified\n", static_cast<unsigned long long>(files));
    return 0;
  }

 private:
  // The summary's balance figures from the parts: rows per shard, and per server the
  // bytes of its parts' files (the placement of a config with the MANIFEST's tables).
  ServerFigures Balance(const Manifest& m) const {
    config::TrainConfig cfg;
    std::vector<wire::ShardStats> stats;
    for (size_t i = 0; i < m.tables.size(); ++i) {
      const ManifestTable& t = m.tables[i];
      config::TableConfig* tc = cfg.add_tables();
      tc->set_name(t.name);
      tc->set_shards(t.shards);
      for (const ManifestPart& p : t.parts) {
        wire::ShardStats& s = stats.emplace_back();
        s.set_table(static_cast<uint32_t>(i));
        s.set_shard(p.shard);
        s.set_rows(p.rows);
        uint64_t bytes = 0;
        for (const ManifestFile& f : p.files) bytes += f.bytes;
        s.set_bytes(bytes);
      }
    }
    const Placement placement(cfg, std::vector<int>(std::max(servers_, 1), 1));
    return ServerFiguresOf(stats, cfg, servers_, [&](int t, uint32_t shard) {
      return placement.ServerOf(placement.GlobalShard(t, shard));
    });
  }

  void Problem(const std::string& what) {
    ++problems_;
    std::fprintf(stderr, "PROBLEM: %s\n", what.c_str());
  }

  void CheckPart(const Manifest& m, const ManifestTable& t, const ManifestPart& p) {
    const std::string stem = t.name + "/" + DumpPartStem(p.shard, t.shards);
    std::vector<std::string> want;
    if (t.text) {
      want = {stem + ".txt"};
    } else {
      want = {stem + ".ids.npy", stem + ".emb.npy"};
      if (t.counts || t.checkpoint()) want.push_back(stem + ".count.npy");
      if (t.checkpoint()) want.push_back(stem + ".state.npy");
      // An incremental series: row numbers, and a delta's removed IDs.
      if (!m.base.empty()) want.push_back(stem + ".rows.npy");
      if (!m.parent.empty()) want.push_back(stem + ".removed.npy");
    }
    std::vector<std::string> have;
    for (const auto& f : p.files) have.push_back(f.name);
    // Optional: last-push steps (ttl_steps) and, in checkpoints, the lane's admission
    // sketch and shared default row of the shard.
    if (!t.text)
      for (const char* extra : {".step.npy", ".sketch.npy", ".default.npy"})
        if (std::find(have.begin(), have.end(), stem + extra) != have.end())
          want.push_back(stem + extra);
    if (have != want) {
      std::string list;
      for (const auto& w : want) list += " " + w;
      Problem("part " + stem + ": MANIFEST lists other files than expected:" + list);
    }
    for (const ManifestFile& f : p.files) CheckFile(t, p, f);
  }

  void CheckFile(const ManifestTable& t, const ManifestPart& p, const ManifestFile& mf) {
    const std::string path = dir_ + "/" + mf.name;
    Result<File> f = Open(path);
    if (!f.ok()) return Problem(f.status().message());
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) return Problem("cannot stat " + path);
    if (size != mf.bytes)
      Problem(path + ": " + std::to_string(size) + " bytes, MANIFEST says " +
              std::to_string(mf.bytes) + (size < mf.bytes ? " (truncated)" : ""));
    // IDs (a delta's removed IDs too) must sit in the part their shard names.
    const bool removed = mf.name.ends_with(".removed.npy");
    const bool ids = mf.name.ends_with(".ids.npy") || removed;
    const bool npy = mf.name.ends_with(".npy");
    NpyInfo info;
    if (npy) {
      Result<NpyInfo> h = ReadNpyHeader(f->get(), path);
      if (!h.ok()) return Problem(h.status().message());
      info = *h;
      std::string descr = "<u8";
      std::vector<uint64_t> shape = {p.rows};
      if (mf.name.ends_with(".emb.npy")) descr = "<f4", shape = {p.rows, t.dim};
      if (mf.name.ends_with(".count.npy") || mf.name.ends_with(".rows.npy")) descr = "<u4";
      if (removed && info.shape.size() == 1) shape = info.shape;  // any number of IDs
      // Checkpoint state: float32 [rows, state_floats] (Adam's step count is a uint32 kept
      // in the bits of its float slot).
      if (mf.name.ends_with(".state.npy")) descr = "<f4", shape = {p.rows, t.state_floats};
      // Per shard, not per row: the sketch's [depth, width] counters and the shared
      // default row's weights then optimizer state.
      if (mf.name.ends_with(".sketch.npy") && info.shape.size() == 2)
        descr = "<u4", shape = info.shape;
      if (mf.name.ends_with(".default.npy")) descr = "<f4", shape = {t.dim + t.state_floats};
      if (info.descr != descr || info.shape != shape)
        Problem(path + ": dtype " + info.descr + " shape of " + std::to_string(info.shape.size()) +
                " dims, expected " + descr + " " +
                (shape.size() == 1 ? "[rows]" : "[rows, " + std::to_string(shape[1]) + "]") +
                " with rows " + std::to_string(p.rows));
      if (info.header_bytes + info.elements() * info.item_bytes() != size)
        Problem(path + ": " + std::to_string(size) + " bytes do not hold the " +
                std::to_string(info.elements()) + " elements its header declares");
      std::rewind(f->get());
    }
    // One pass: the checksum of every byte, and for IDs and text the shard of every ID.
    Xxh64 hash;
    std::vector<char> buf(kChunk);
    uint64_t offset = 0, misplaced = 0, lines = 0, bad_lines = 0, unordered = 0;
    // Row numbers (an incremental series) ascend strictly: the rows are in row order.
    const bool numbers = mf.name.ends_with(".rows.npy") && info.descr == "<u4";
    int64_t last_row = -1;
    std::string line;
    std::vector<float> w;
    for (;;) {
      const size_t n = std::fread(buf.data(), 1, buf.size(), f->get());
      if (n == 0) break;
      hash.Update(buf.data(), n);
      if (ids) {
        // The header is 64-byte aligned and chunks are whole IDs, so IDs never straddle.
        for (size_t i = 0; i + 8 <= n; i += 8) {
          if (offset + i < info.header_bytes) continue;
          uint64_t id;
          std::memcpy(&id, buf.data() + i, 8);
          misplaced += ShardOf(id, t.shards) != p.shard;
        }
      } else if (numbers) {
        for (size_t i = 0; i + 4 <= n; i += 4) {
          if (offset + i < info.header_bytes) continue;
          uint32_t row;
          std::memcpy(&row, buf.data() + i, 4);
          unordered += static_cast<int64_t>(row) <= last_row;
          last_row = row;
        }
      } else if (t.text) {
        for (size_t i = 0; i < n; ++i) {
          if (buf[i] != '\n') {
            line.push_back(buf[i]);
            continue;
          }
          uint64_t id;
          ++lines;
          if (!ParseTextRow(line, t.dim, &id, &w))
            ++bad_lines;
          else
            misplaced += ShardOf(id, t.shards) != p.shard;
          line.clear();
        }
      }
      offset += n;
    }
    if (hash.Digest() != mf.xxh64)
      Problem(path + ": checksum " + Hex(hash.Digest()) + ", MANIFEST says " + Hex(mf.xxh64));
    if (unordered > 0)
      Problem(path + ": " + std::to_string(unordered) + " row numbers do not ascend");
    if (misplaced > 0)
      Problem(path + ": " + std::to_string(misplaced) + " IDs do not belong to shard " +
              std::to_string(p.shard) + " of " + std::to_string(t.shards));
    if (t.text && (lines != p.rows || bad_lines > 0 || !line.empty()))
      Problem(path + ": " + std::to_string(lines) + " lines (" + std::to_string(bad_lines) +
              " malformed), expected " + std::to_string(p.rows) + " rows of dim " +
              std::to_string(t.dim));
  }

  const std::string dir_;
  const int servers_;
  int problems_ = 0;
};

// ---- reading parts -----------------------------------------------------------------

// Calls fn(id, weights, count, has_count) for every row of a part, in file order.
template <typename Fn>
Status ForEachPartRow(const std::string& dir, const ManifestTable& t, const ManifestPart& p,
                      Fn&& fn) {
  const std::string stem = dir + "/" + t.name + "/" + DumpPartStem(p.shard, t.shards);
  if (t.text) {
    std::ifstream in(stem + ".txt");
    if (!in) return Status::IoError("cannot open " + stem + ".txt");
    std::string line;
    std::vector<float> w;
    uint64_t id;
    while (std::getline(in, line)) {
      if (!ParseTextRow(line, t.dim, &id, &w))
        return Status::InvalidArgument(stem + ".txt: malformed line");
      fn(id, w.data(), 0u, false);
    }
    return Status::Ok();
  }
  DIN_ASSIGN_OR_RETURN(File ids, Open(stem + ".ids.npy"));
  DIN_ASSIGN_OR_RETURN(File emb, Open(stem + ".emb.npy"));
  File counts;
  DIN_ASSIGN_OR_RETURN(NpyInfo ih, ReadNpyHeader(ids.get(), stem + ".ids.npy"));
  DIN_ASSIGN_OR_RETURN(NpyInfo eh, ReadNpyHeader(emb.get(), stem + ".emb.npy"));
  if (ih.descr != "<u8" || eh.descr != "<f4" || ih.shape != std::vector<uint64_t>{p.rows} ||
      eh.shape != std::vector<uint64_t>{p.rows, t.dim})
    return Status::InvalidArgument(stem + ": dtype or shape differs from the MANIFEST");
  if (t.counts) {
    DIN_ASSIGN_OR_RETURN(counts, Open(stem + ".count.npy"));
    DIN_ASSIGN_OR_RETURN(NpyInfo ch, ReadNpyHeader(counts.get(), stem + ".count.npy"));
    if (ch.descr != "<u4" || ch.shape != std::vector<uint64_t>{p.rows})
      return Status::InvalidArgument(stem + ".count.npy: dtype or shape differs");
  }
  constexpr uint64_t kRows = 4096;
  std::vector<uint64_t> idv(kRows);
  std::vector<float> wv(kRows * t.dim);
  std::vector<uint32_t> cv(kRows);
  for (uint64_t base = 0; base < p.rows; base += kRows) {
    const size_t n = std::min(kRows, p.rows - base);
    if (std::fread(idv.data(), 8, n, ids.get()) != n ||
        std::fread(wv.data(), 4 * size_t{t.dim}, n, emb.get()) != n ||
        (counts && std::fread(cv.data(), 4, n, counts.get()) != n))
      return Status::IoError(stem + ": truncated part (run din_dump inspect)");
    for (size_t i = 0; i < n; ++i)
      fn(idv[i], wv.data() + i * t.dim, counts ? cv[i] : 0u, static_cast<bool>(counts));
  }
  return Status::Ok();
}

int Fail(const Status& st) {
  std::fprintf(stderr, "din_dump: %s\n", st.ToString().c_str());
  return 1;
}

int Lookup(const std::string& dir, const std::string& table, const std::vector<uint64_t>& ids) {
  Result<Manifest> m = LoadDump(dir);
  if (!m.ok()) return Fail(m.status());
  const ManifestTable* t = m->Find(table);
  if (t == nullptr) return Fail(Status::NotFound("no table " + table + " in " + dir));
  std::map<uint32_t, std::map<uint64_t, std::string>> by_shard;  // shard -> id -> line
  for (uint64_t id : ids) by_shard[ShardOf(id, t->shards)][id];
  for (auto& [shard, want] : by_shard) {
    Status st = ForEachPartRow(dir, *t, t->parts[shard],
                               [&](uint64_t id, const float* w, uint32_t count, bool has_count) {
                                 auto it = want.find(id);
                                 if (it == want.end()) return;
                                 std::string line;
                                 AppendRow(id, w, t->dim, &line);
                                 if (has_count) line += "\tcount " + std::to_string(count);
                                 it->second = line;
                               });
    if (!st.ok()) return Fail(st);
  }
  int missing = 0;
  for (uint64_t id : ids) {
    const std::string& line = by_shard[ShardOf(id, t->shards)][id];
    if (line.empty()) {
      ++missing;
      std::fprintf(stderr, "id %llu: not in table %s (part %u of %u)\n",
                   static_cast<unsigned long long>(id), table.c_str(), ShardOf(id, t->shards),
                   t->shards);
    } else {
      std::printf("%s\n", line.c_str());
    }
  }
  return missing > 0 ? 1 : 0;
}

int ToText(const std::string& dir, const std::string& table) {
  Result<Manifest> m = LoadDump(dir);
  if (!m.ok()) return Fail(m.status());
  const ManifestTable* t = m->Find(table);
  if (t == nullptr) return Fail(Status::NotFound("no table " + table + " in " + dir));
  std::string out;
  for (const ManifestPart& p : t->parts) {
    Status st = ForEachPartRow(dir, *t, p, [&](uint64_t id, const float* w, uint32_t, bool) {
      AppendRow(id, w, t->dim, &out);
      out.push_back('\n');
      if (out.size() > kChunk) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    });
    if (!st.ok()) return Fail(st);
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// din_dump export CKPT OUT (see the top of this file).
int Export(const std::string& ckpt, const std::string& out) {
  namespace fs = std::filesystem;
  auto verified = VerifyCheckpoint(ckpt);
  if (!verified.ok()) return Fail(verified.status());
  const ckpt::CheckpointManifest& cm = *verified;
  auto params = WriteDenseExport(cm.config(), ckpt, static_cast<int>(cm.workers()), cm.step(), out);
  if (!params.ok()) return Fail(params.status());
  auto tables = ReadCompleteManifest(ckpt + "/tables");
  if (!tables.ok()) return Fail(tables.status());
  Manifest dump;
  dump.step = tables->step;
  dump.config_text = tables->config_text;
  const std::string dir = out + "/embeddings";
  uint64_t rows = 0;
  for (ManifestTable t : tables->tables) {
    t.optimizer.clear();
    t.state_floats = 0;
    t.counts = false;
    t.text = false;
    std::error_code ec;
    fs::create_directories(dir + "/" + t.name, ec);
    if (ec) return Fail(Status::IoError("cannot create " + dir + "/" + t.name));
    for (ManifestPart& p : t.parts) {
      std::vector<ManifestFile> kept;
      for (const ManifestFile& f : p.files) {
        if (!f.name.ends_with(".ids.npy") && !f.name.ends_with(".emb.npy")) continue;
        if (f.name.ends_with(".emb.npy")) {
          std::unique_ptr<std::FILE, FileCloser> in(
              std::fopen((ckpt + "/tables/" + f.name).c_str(), "rb"));
          if (!in) return Fail(Status::IoError("cannot open " + ckpt + "/tables/" + f.name));
          auto info = ReadNpyHeader(in.get(), ckpt + "/tables/" + f.name);
          if (!info.ok()) return Fail(info.status());
          if (info->descr != "<f4")
            return Fail(Status::InvalidArgument(
                ckpt + "/tables/" + f.name + " stores " + info->descr +
                ", not float32: export with launch/din-train --export, whose servers dump "
                "float32"));
        }
        fs::copy_file(ckpt + "/tables/" + f.name, dir + "/" + f.name,
                      fs::copy_options::overwrite_existing, ec);
        if (ec) return Fail(Status::IoError("cannot copy " + f.name + ": " + ec.message()));
        kept.push_back(f);
      }
      p.files = kept;
      rows += p.rows;
    }
    dump.tables.push_back(std::move(t));
  }
  for (const auto& t : dump.tables) {
    const Status st = SyncDirectory(dir + "/" + t.name);
    if (!st.ok()) return Fail(st);
  }
  Status st = WriteFileDurably(dir + "/" + kManifestName, FormatManifest(dump));
  if (st.ok()) st = WriteFileDurably(dir + "/" + kSuccessName, "");
  if (!st.ok()) return Fail(st);
  Json j;
  j["mode"] = "export";
  j["checkpoint"] = ckpt;
  j["step"] = cm.step();
  j["export_dir"] = out;
  j["rows"] = rows;
  j["dense_params"] = *params;
  std::printf("%s\n", JsonLine(j).c_str());
  return 0;
}

// One part of one table while merging, by row number in the shard (the order a full
// dump writes): ids, embedding rows and (when the table has them) counts, which rows hold
// an ID, and the row of every ID.
struct MergePart {
  std::vector<uint64_t> ids;
  std::vector<float> emb;
  std::vector<uint32_t> counts;
  std::vector<uint8_t> live;
  std::unordered_map<uint64_t, uint32_t> at;
};

// Applies `part` of `table` in dump `dir` of an incremental series to *out: first the
// IDs its .removed.npy lists (a delta) leave, then every row it holds goes to its row
// number, replacing what was there. A row number holding another ID that was not removed,
// or an ID moving to another row without being removed, is an inconsistent series.
Status MergeInto(const std::string& dir, const ManifestTable& table, const ManifestPart& part,
                 bool delta, MergePart* out) {
  if (table.text) return Status::InvalidArgument(dir + ": table " + table.name + " is text");
  const std::string stem = table.name + "/" + DumpPartStem(part.shard, table.shards);
  struct Array {
    const char* suffix;
    const char* descr;
    bool want;
    std::string data;
    const char* at = nullptr;
    uint64_t n = 0;
  };
  Array arrays[5] = {{".ids.npy", "<u8", true, {}},
                     {".emb.npy", "<f4", true, {}},
                     {".count.npy", "<u4", table.counts, {}},
                     {".rows.npy", "<u4", true, {}},
                     {".removed.npy", "<u8", delta, {}}};
  for (Array& a : arrays) {
    if (!a.want) continue;
    const ManifestFile* file = nullptr;
    for (const ManifestFile& f : part.files)
      if (f.name == stem + a.suffix) file = &f;
    if (file == nullptr)
      return Status::InvalidArgument(dir + ": no " + stem + a.suffix +
                                     (std::string(a.suffix) == ".rows.npy"
                                          ? " (not written as part of an incremental series)"
                                          : ""));
    DIN_ASSIGN_OR_RETURN(a.data, ReadVerifiedFile(dir, *file));
    DIN_ASSIGN_OR_RETURN(NpyInfo info, ParseNpyHeader(a.data, dir + "/" + file->name));
    const bool removed = &a == &arrays[4];
    if (info.descr != a.descr ||
        info.elements() * info.item_bytes() + info.header_bytes != a.data.size() ||
        info.shape.empty() || (!removed && info.shape[0] != part.rows))
      return Status::InvalidArgument(dir + "/" + file->name + ": unexpected dtype or shape");
    a.at = a.data.data() + info.header_bytes;
    a.n = info.shape[0];
  }
  if (delta) {
    for (uint64_t i = 0; i < arrays[4].n; ++i) {
      uint64_t id;
      std::memcpy(&id, arrays[4].at + i * 8, 8);
      auto it = out->at.find(id);
      if (it == out->at.end()) continue;  // created and removed between two dumps
      out->live[it->second] = 0;
      out->at.erase(it);
    }
  }
  const size_t dim = table.dim;
  for (uint64_t i = 0; i < part.rows; ++i) {
    uint64_t id;
    uint32_t row;
    std::memcpy(&id, arrays[0].at + i * 8, 8);
    std::memcpy(&row, arrays[3].at + i * 4, 4);
    if (row >= out->live.size()) {
      const size_t n = std::max<size_t>(size_t{row} + 1, out->live.size() * 2);
      out->ids.resize(n);
      out->live.resize(n, 0);
      out->emb.resize(n * dim);
      if (table.counts) out->counts.resize(n);
    }
    auto [it, fresh] = out->at.emplace(id, row);
    if ((out->live[row] && out->ids[row] != id) || it->second != row)
      return Status::InvalidArgument(
          dir + "/" + stem + ".rows.npy: ID " + std::to_string(id) + " at row " +
          std::to_string(row) + ", where the series holds ID " +
          std::to_string(out->live[row] ? out->ids[row] : id) + " at row " +
          std::to_string(out->live[row] ? row : it->second) +
          " that no .removed.npy since removed (a dump of the series is missing?)");
    out->ids[row] = id;
    out->live[row] = 1;
    std::memcpy(out->emb.data() + size_t{row} * dim, arrays[1].at + i * dim * 4, dim * 4);
    if (table.counts) std::memcpy(&out->counts[row], arrays[2].at + i * 4, 4);
  }
  return Status::Ok();
}

Result<ManifestFile> WriteNpyFile(const std::string& dir, const std::string& name,
                                  const std::string& header, const void* data, size_t bytes) {
  std::string content = header;
  content.append(static_cast<const char*>(data), bytes);
  DIN_RETURN_IF_ERROR(WriteFileDurably(dir + "/" + name, content));
  return ManifestFile{name, content.size(), Xxh64::Of(content.data(), content.size())};
}

int Merge(const std::vector<std::string>& inputs, const std::string& out) {
  namespace fs = std::filesystem;
  std::vector<Manifest> ms;
  for (const std::string& in : inputs) {
    auto m = ReadCompleteManifest(in);
    if (!m.ok()) return Fail(m.status());
    ms.push_back(std::move(*m));
  }
  auto name_of = [](const std::string& p) { return fs::path(p).lexically_normal().filename(); };
  const std::string base = fs::path(inputs[0]).lexically_normal().filename().string();
  if (ms[0].base != base || !ms[0].parent.empty())
    return Fail(Status::InvalidArgument(inputs[0] +
                                        " is not the base of an incremental series "
                                        "(its MANIFEST names base '" +
                                        ms[0].base + "')"));
  for (size_t i = 1; i < ms.size(); ++i) {
    const std::string parent = name_of(inputs[i - 1]).string();
    if (ms[i].base != base || ms[i].parent != parent)
      return Fail(Status::InvalidArgument(inputs[i] + ": base '" + ms[i].base + "', parent '" +
                                          ms[i].parent + "'; expected base '" + base +
                                          "', parent '" + parent + "'"));
  }
  Manifest merged;
  merged.step = ms.back().step;
  merged.config_text = ms.back().config_text;
  std::error_code ec;
  for (const ManifestTable& bt : ms[0].tables) {
    ManifestTable t = bt;
    t.rows = 0;
    fs::create_directories(out + "/" + t.name, ec);
    if (ec) return Fail(Status::IoError("cannot create " + out + "/" + t.name));
    for (ManifestPart& p : t.parts) {
      MergePart mp;
      for (size_t i = 0; i < ms.size(); ++i) {
        const ManifestTable* it = ms[i].Find(t.name);
        if (it == nullptr || it->dim != t.dim || it->shards != t.shards || it->counts != t.counts)
          return Fail(Status::InvalidArgument(inputs[i] + ": table " + t.name +
                                              " differs from the base's"));
        const Status st = MergeInto(inputs[i], *it, it->parts[p.shard], i > 0, &mp);
        if (!st.ok()) return Fail(st);
      }
      // The live rows in row-number order, as a full dump writes them.
      uint64_t n = 0;
      for (size_t r = 0; r < mp.live.size(); ++r) {
        if (!mp.live[r]) continue;
        mp.ids[n] = mp.ids[r];
        if (n != r) std::memcpy(mp.emb.data() + n * t.dim, mp.emb.data() + r * t.dim, t.dim * 4);
        if (t.counts) mp.counts[n] = mp.counts[r];
        ++n;
      }
      const std::string stem = t.name + "/" + DumpPartStem(p.shard, t.shards);
      p.rows = n;
      p.files.clear();
      auto put = [&](const std::string& suffix, const std::string& header, const void* d,
                     size_t bytes) -> Status {
        DIN_ASSIGN_OR_RETURN(ManifestFile f, WriteNpyFile(out, stem + suffix, header, d, bytes));
        p.files.push_back(f);
        return Status::Ok();
      };
      Status st = put(".ids.npy", NpyHeader("<u8", {n}), mp.ids.data(), n * 8);
      if (st.ok()) st = put(".emb.npy", NpyHeader("<f4", {n, t.dim}), mp.emb.data(), n * t.dim * 4);
      if (st.ok() && t.counts)
        st = put(".count.npy", NpyHeader("<u4", {n}), mp.counts.data(), n * 4);
      if (!st.ok()) return Fail(st);
      t.rows += n;
    }
    merged.tables.push_back(std::move(t));
  }
  Status st = WriteFileDurably(out + "/" + kManifestName, FormatManifest(merged));
  if (st.ok()) st = WriteFileDurably(out + "/" + kSuccessName, "");
  if (!st.ok()) return Fail(st);
  uint64_t rows = 0;
  for (const auto& t : merged.tables) rows += t.rows;
  std::printf("merged %zu dumps into %s: step %llu, %llu rows\n", inputs.size(), out.c_str(),
              static_cast<unsigned long long>(merged.step), static_cast<unsigned long long>(rows));
  return 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: din_dump inspect DIR [--servers S]\n"
               "       din_dump lookup DIR --table T --ids 1,2,3\n"
               "       din_dump to-text DIR --table T\n"
               "       din_dump export CKPT OUT\n"
               "       din_dump merge BASE DELTA... OUT\n");
  return 2;
}

int Main(int argc, char** argv) {
  if (argc < 3) return Usage();
  const std::string cmd = argv[1];
  const std::string dir = argv[2];
  if (cmd == "export") return argc == 4 ? Export(dir, argv[3]) : Usage();
  if (cmd == "merge") {
    if (argc < 4) return Usage();
    return Merge(std::vector<std::string>(argv + 2, argv + argc - 1), argv[argc - 1]);
  }
  std::string table, ids_arg, servers_arg;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    std::string* dst = nullptr;
    if (a == "--table" || a.starts_with("--table=")) dst = &table;
    if (a == "--ids" || a.starts_with("--ids=")) dst = &ids_arg;
    if (cmd == "inspect" && (a == "--servers" || a.starts_with("--servers="))) dst = &servers_arg;
    if (dst == nullptr) return Usage();
    const size_t eq = a.find('=');
    if (eq != std::string::npos) {
      *dst = a.substr(eq + 1);
    } else if (i + 1 < argc) {
      *dst = argv[++i];
    } else {
      return Usage();
    }
  }
  std::error_code ec;
  const bool checkpoint = std::filesystem::exists(dir + "/" + kCheckpointManifestName, ec);
  const std::string tables = checkpoint ? dir + "/tables" : dir;
  if (cmd == "inspect") {
    int servers = 0;
    if (!servers_arg.empty()) {
      auto [p, ec2] =
          std::from_chars(servers_arg.data(), servers_arg.data() + servers_arg.size(), servers);
      if (ec2 != std::errc() || p != servers_arg.data() + servers_arg.size() || servers < 1 ||
          servers > 65536)
        return Fail(Status::InvalidArgument("--servers: '" + servers_arg +
                                            "' is not a number of servers (1..65536)"));
    }
    if (checkpoint) {
      auto m = VerifyCheckpoint(dir);
      if (!m.ok()) {
        std::fprintf(stderr, "din_dump inspect: %s\n", m.status().ToString().c_str());
        return 1;
      }
      std::printf("checkpoint %s: step %llu, epoch %u, %u worker state(s) verified\n", dir.c_str(),
                  static_cast<unsigned long long>(m->step()), m->epoch() + 1, m->workers());
      if (servers == 0) servers = static_cast<int>(m->servers());
    }
    return Inspector(tables, servers).Run();
  }
  if (table.empty()) return Usage();
  if (cmd == "to-text") return ToText(tables, table);
  if (cmd != "lookup" || ids_arg.empty()) return Usage();
  std::vector<uint64_t> ids;
  std::stringstream ss(ids_arg);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    uint64_t id;
    auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), id);
    if (ec != std::errc() || p != tok.data() + tok.size())
      return Fail(Status::InvalidArgument("--ids: '" + tok + "' is not an unsigned integer"));
    ids.push_back(id);
  }
  return Lookup(tables, table, ids);
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) { return din::Main(argc, argv); }
