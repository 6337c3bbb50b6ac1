// din_plan: before a job starts, what each server will hold and whether it fits.
//
//   din_plan --config job.pbtxt --servers N --workers W [--set PATH=VALUE ...]
//            [--from DIR] [--rows TABLE=N,...] [--memory_per_server BYTES]
//
// Rows per table come from, in this order: --rows; the MANIFEST of a dump or checkpoint
// DIR (--from; the rows a previous run's PREPASS counts created); the config's
// expected_rows_per_shard times shards. Shards are placed as the servers place them
// (common/placement.h), rows spread evenly over a table's shards (shard = hash of the ID).
// Bytes per row: key, count, weights and optimizer state (ShardStore's row) plus 5 bytes
// of index at the load factor; while an index grows it holds 6 bytes more per row.
//
// Prints per server and table the expected rows, bytes and shards, then per server the
// total against its memory budget (ps.memory_limit_bytes, else --memory_per_server,
// else 90% of this host's available memory over the job's servers and workers, as
// din_ps computes it on one host). Exits 1, naming the server and the shortfall, when a
// server does not fit, or naming the table when a shard would pass 2^28 - 1 rows.
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <gflags/gflags.h>

#include "common/config.h"
#include "common/config_override.h"
#include "common/dump_format.h"
#include "common/optim/optimizer.h"
#include "common/placement.h"
#include "ps/server.h"

DEFINE_string(config, "", "text-format TrainConfig (*.pbtxt)");
DEFINE_int32(servers, 1, "parameter-server processes");
DEFINE_int32(workers, 1, "worker processes (they share the host's memory)");
DEFINE_string(from, "", "a dump or checkpoint directory whose MANIFEST gives rows per table");
DEFINE_string(rows, "", "rows per table, TABLE=N,... (overrides --from and the config)");
DEFINE_uint64(memory_per_server, 0,
              "table memory per server when ps.memory_limit_bytes is 0 (0: this host's share)");

namespace din {
namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "din_plan: %s\n", msg.c_str());
  return 2;
}

int Run(const std::vector<std::string>& sets) {
  if (FLAGS_config.empty()) return Fail("--config is required");
  if (FLAGS_servers < 1 || FLAGS_workers < 1) return Fail("--servers and --workers must be >= 1");
  auto cfg = LoadConfigWithOverrides(FLAGS_config, sets);
  if (!cfg.ok()) return Fail(cfg.status().ToString());
  std::map<std::string, uint64_t> rows;
  std::map<std::string, std::string> source;
  for (const auto& t : cfg->tables()) {
    rows[t.name()] = t.expected_rows_per_shard() * t.shards();
    source[t.name()] = "expected_rows_per_shard";
  }
  if (!FLAGS_from.empty()) {
    auto m = ReadCompleteManifest(FLAGS_from);
    if (!m.ok()) return Fail(m.status().ToString());
    for (const auto& t : m->tables)
      if (rows.count(t.name)) {
        rows[t.name] = t.rows;
        source[t.name] = FLAGS_from + "/MANIFEST";
      }
  }
  for (size_t at = 0; at < FLAGS_rows.size();) {
    size_t end = FLAGS_rows.find(',', at);
    if (end == std::string::npos) end = FLAGS_rows.size();
    const std::string item = FLAGS_rows.substr(at, end - at);
    const size_t eq = item.find('=');
    if (eq == std::string::npos || !rows.count(item.substr(0, eq)))
      return Fail("--rows: expected TABLE=N with a table of the config, got '" + item + "'");
    rows[item.substr(0, eq)] = std::strtoull(item.c_str() + eq + 1, nullptr, 10);
    source[item.substr(0, eq)] = "--rows";
    at = end + 1;
  }

  const int servers = FLAGS_servers;
  Placement placement(*cfg, std::vector<int>(servers, 1));
  uint64_t budget = cfg->ps().memory_limit_bytes();
  std::string budget_from = "ps.memory_limit_bytes";
  if (budget == 0 && FLAGS_memory_per_server > 0) {
    budget = FLAGS_memory_per_server;
    budget_from = "--memory_per_server";
  }
  if (budget == 0) {
    std::ifstream in("/proc/meminfo");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    budget = MemoryBudgetBytes(cfg->ps(), MemAvailableBytes(text), servers + FLAGS_workers);
    budget_from = "90% of this host's available memory over " +
                  std::to_string(servers + FLAGS_workers) + " processes";
  }

  int status = 0;
  std::vector<uint64_t> server_bytes(servers, 0), server_peak(servers, 0);
  std::printf("%-8s %-16s %8s %16s %18s %14s  %s\n", "server", "table", "shards", "rows", "bytes",
              "bytes/row", "rows from");
  for (int s = 0; s < servers; ++s) {
    for (int t = 0; t < cfg->tables_size(); ++t) {
      const auto& tc = cfg->tables(t);
      const auto opt = SparseOptimizer::Create(tc.optimizer());
      const uint64_t row_bytes = 12 + 4ull * (tc.dim() + opt->StateFloats(tc.dim())) + 5;
      const uint64_t per_shard = (rows[tc.name()] + tc.shards() - 1) / tc.shards();
      uint32_t shards = 0;
      for (uint32_t k = 0; k < tc.shards(); ++k)
        shards += placement.ServerOf(placement.GlobalShard(t, k)) == s;
      const uint64_t r = per_shard * shards;
      server_bytes[s] += r * row_bytes;
      server_peak[s] = std::max(server_peak[s], per_shard * 6);  // one shard's index growth
      std::printf("%-8d %-16s %8u %16" PRIu64 " %18" PRIu64 " %14" PRIu64 "  %s\n", s,
                  tc.name().c_str(), shards, r, r * row_bytes, row_bytes,
                  source[tc.name()].c_str());
      if (s == 0 && per_shard > kMaxRowsPerShard) {
        std::printf("REFUSED: table %s: %" PRIu64 " rows over %u shards is %" PRIu64
                    " rows per shard, past the most one shard holds (2^28 - 1 = %" PRIu64
                    "); use at least %" PRIu64 " shards\n",
                    tc.name().c_str(), rows[tc.name()], tc.shards(), per_shard, kMaxRowsPerShard,
                    (rows[tc.name()] + kMaxRowsPerShard - 1) / kMaxRowsPerShard);
        status = 1;
      }
    }
  }
  std::printf("budget per server: %" PRIu64 " bytes (%s)\n", budget, budget_from.c_str());
  for (int s = 0; s < servers; ++s) {
    const uint64_t need = server_bytes[s] + server_peak[s];
    std::printf("server %d: %" PRIu64 " bytes of tables (+%" PRIu64
                " while an index grows) of %" PRIu64 ": %s\n",
                s, server_bytes[s], server_peak[s], budget,
                need <= budget ? "fits" : "DOES NOT FIT");
    if (need > budget) {
      std::printf("REFUSED: server %d needs %" PRIu64 " bytes, %" PRIu64
                  " more than its budget of %" PRIu64
                  " bytes; add servers (--servers) or raise ps.memory_limit_bytes\n",
                  s, need, need - budget, budget);
      status = 1;
    }
  }
  return status;
}

}  // namespace
}  // namespace din

int main(int argc, char** argv) {
  auto sets = din::ExtractRepeatedFlag("set", &argc, argv);
  if (!sets.ok()) return din::Fail(sets.status().ToString());
  gflags::SetUsageMessage("din_plan --config FILE --servers N --workers W [--set PATH=VALUE]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return din::Run(*sets);
}
