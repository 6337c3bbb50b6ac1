// table_bench: one shard of dim-16 rows in a chosen format (--optimizer, --storage).
// Inserts N distinct random IDs (creating and initialising rows, as a training pull
// does), then looks all of them up in a different random order. Prints one JSON line:
//   rows, optimizer, storage, inserts_per_s, lookups_per_s,
//   bytes_per_row: the growth of the process's RSS over the inserts divided by the rows,
//     measured after the index drain has finished (as a server does between requests),
//   computed_bytes_per_row: ShardStore::MemoryBytes() / rows at the same point,
//   row_bytes (key + count + weights + state in the arena), payload_bytes_per_row,
//   index_draining (whether an old index was still draining when the inserts ended),
//   insert_max_us (the longest single insert: index growth is incremental, so no insert
//   re-indexes the whole shard)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include <gflags/gflags.h>

#include "common/json.h"
#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "common/proto/config.pb.h"
#include "ps/shard_store.h"

DEFINE_uint64(rows, 10'000'000, "distinct IDs to insert (100000000 where memory allows)");
DEFINE_uint32(dim, 16, "row width");
DEFINE_string(optimizer, "adagrad", "sgd, adagrad, rowwise_adagrad, adam or ftrl (defaults)");
DEFINE_string(storage, "fp32", "weight storage: fp32, fp16 or bf16");

namespace {

uint64_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  const uint64_t n = FLAGS_rows;
  const uint32_t dim = FLAGS_dim;
  din::config::OptimizerConfig oc;
  if (FLAGS_optimizer == "sgd") {
    oc.mutable_sgd();
  } else if (FLAGS_optimizer == "adagrad") {
    oc.mutable_adagrad();
  } else if (FLAGS_optimizer == "rowwise_adagrad") {
    oc.mutable_rowwise_adagrad();
  } else if (FLAGS_optimizer == "adam") {
    oc.mutable_adam();
  } else if (FLAGS_optimizer == "ftrl") {
    oc.mutable_ftrl();
  } else {
    std::fprintf(stderr, "--optimizer=%s: expected sgd, adagrad, rowwise_adagrad, adam or ftrl\n",
                 FLAGS_optimizer.c_str());
    return 1;
  }
  din::WeightFormat format;
  if (FLAGS_storage == "fp32") {
    format = din::WeightFormat::kFp32;
  } else if (FLAGS_storage == "fp16") {
    format = din::WeightFormat::kFp16;
  } else if (FLAGS_storage == "bf16") {
    format = din::WeightFormat::kBf16;
  } else {
    std::fprintf(stderr, "--storage=%s: expected fp32, fp16 or bf16\n", FLAGS_storage.c_str());
    return 1;
  }
  const std::unique_ptr<din::SparseOptimizer> opt = din::SparseOptimizer::Create(oc);
  din::config::Initializer ic;
  din::RowInitializer init(ic, 1);
  std::vector<float> w(dim);

  // Distinct 64-bit keys: an odd-multiplier bijection of 0..n-1.
  std::vector<uint64_t> keys(n);
  for (uint64_t i = 0; i < n; ++i) keys[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;
  std::shuffle(keys.begin(), keys.end(), std::mt19937_64(1));

  const uint64_t rss0 = RssBytes();
  auto store = std::make_unique<din::ShardStore>(dim, opt->StateFloats(dim), 0, 0, format);
  double insert_max_us = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    bool inserted;
    const auto ti = std::chrono::steady_clock::now();
    auto row = store->FindOrInsert(keys[i], &inserted);
    insert_max_us = std::max(insert_max_us, 1e6 * Seconds(ti, std::chrono::steady_clock::now()));
    if (!row.ok()) {
      std::fprintf(stderr, "%s\n", row.status().ToString().c_str());
      return 1;
    }
    init.Fill(keys[i], w.data(), dim);
    store->SetWeights(*row, w.data());
    opt->InitState(store->State(*row), dim);
  }
  const auto t1 = std::chrono::steady_clock::now();
  // A server finishes an index drain between requests; so does the bench before it
  // measures.
  const bool draining = store->migrating();
  store->CompleteGrowth();
  const uint64_t rss1 = RssBytes();
  const double computed_per_row = static_cast<double>(store->MemoryBytes()) / n;

  std::shuffle(keys.begin(), keys.end(), std::mt19937_64(2));
  float checksum = 0;
  const auto t2 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t row = store->Find(keys[i]);
    store->GetWeights(row, w.data());
    checksum += w[i % dim];
  }
  const auto t3 = std::chrono::steady_clock::now();

  const double rss_per_row = static_cast<double>(rss1 - rss0) / n;
  din::Json j;
  j["bench"] = "table_bench";
  j["rows"] = n;
  j["dim"] = dim;
  j["optimizer"] = opt->Name();
  j["storage"] = FLAGS_storage;
  j["inserts_per_s"] = din::JsonNumber(n / Seconds(t0, t1), 0);
  j["lookups_per_s"] = din::JsonNumber(n / Seconds(t2, t3), 0);
  j["bytes_per_row"] = din::JsonNumber(rss_per_row, 2);
  j["computed_bytes_per_row"] = din::JsonNumber(computed_per_row, 2);
  j["row_bytes"] = store->row_bytes();
  j["payload_bytes_per_row"] = store->payload_bytes();
  j["index_draining"] = draining;
  j["insert_max_us"] = din::JsonNumber(insert_max_us, 1);
  j["checksum"] = checksum;
  std::printf("%s\n", din::JsonLine(j).c_str());
  return 0;
}
