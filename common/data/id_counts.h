// PREPASS for mini-batch aware regularization (docs/design.md §9): per table, the number of
// training samples in which each ID occurs.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/proto/data_config.pb.h"
#include "common/status.h"

namespace din {

struct IdCounts {
  std::vector<std::string> tables;  // Schema::Tables() order
  // counts[t][id] = samples of this partition whose fields of table t contain id; an
  // ID counted once per sample however often it occurs in it (candidate and history).
  std::vector<std::unordered_map<uint64_t, uint64_t>> counts;
  uint64_t samples = 0;
  uint64_t bad_lines = 0;
};

// Scans worker `worker` of `workers`'s partition of `path` once, in file order, with the
// bad-line policy of `cfg`. Behaviour lists are cut to max_history first, as training
// sees them. Summing the maps of all workers gives the exact n_j of the whole input.
Result<IdCounts> CountIds(const config::DataConfig& cfg, const std::string& path, int worker,
                          int workers);

}  // namespace din
