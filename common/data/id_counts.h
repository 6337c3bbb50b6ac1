// PREPASS for mini-batch aware regularization (docs/design.md §9): per table, the number of
// training samples in which each ID occurs, counted in bounded memory.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/proto/data_config.pb.h"
#include "common/status.h"

namespace din {

// Receives the counts held when the count map fills (and once at the end): IDs of table
// `table` (an index into Schema::Tables()) with the number of samples, since the previous
// flush, that contain each. An ID may come in several flushes; the sums are the counts.
using CountSink = std::function<Status(int table, std::span<const uint64_t> ids,
                                       std::span<const uint32_t> counts)>;

struct CountStats {
  std::vector<std::string> tables;  // Schema::Tables() order
  uint64_t samples = 0;
  uint64_t bad_lines = 0;
  uint64_t flushes = 0;    // times the map was emptied into the sink (the last one included)
  uint64_t map_bytes = 0;  // memory of the count map (slots), fixed for the whole scan
};

// Bytes of one slot of the count map: ID, table and count.
inline constexpr uint64_t kCountSlotBytes = 16;

// Scans worker `worker` of `workers`'s partition of `path` once, in file order, with the
// bad-line policy of `cfg`. Behaviour lists are cut to max_history first, as training
// sees them. Each ID is counted once per sample per table, however often it occurs in it
// (candidate and history). The counts live in an open-addressing map of at most
// `map_bytes` bytes (kCountSlotBytes per slot, a power of two of slots, at least 64);
// when it is 3/4 full it is emptied into `sink`, in chunks of at most `chunk` IDs, and
// counting goes on. The map is freed before this returns. Summing what every worker's
// sink receives gives the exact n_j of the whole input, whatever `map_bytes`.
Result<CountStats> CountIds(const config::DataConfig& cfg, const std::string& path, int worker,
                            int workers, uint64_t map_bytes, size_t chunk, const CountSink& sink);

// The whole partition's counts in memory (tests and small tools): CountIds with a sink
// that adds into one hash map per table.
struct IdCounts {
  std::vector<std::string> tables;  // Schema::Tables() order
  std::vector<std::unordered_map<uint64_t, uint64_t>> counts;
  uint64_t samples = 0;
  uint64_t bad_lines = 0;
  uint64_t flushes = 0;
};
Result<IdCounts> CountIdsInMemory(const config::DataConfig& cfg, const std::string& path,
                                  int worker, int workers, uint64_t map_bytes = 1 << 20);

}  // namespace din
