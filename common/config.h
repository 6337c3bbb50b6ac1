// Loading and validating the training configuration (common/proto/config.proto).
#pragma once

#include <cstdint>
#include <string>

#include "common/proto/config.pb.h"
#include "common/status.h"

namespace din {

// Limits ValidateConfig enforces on every table.
inline constexpr uint32_t kMaxDim = 4096;
inline constexpr uint32_t kMaxShards = 65536;
// The most rows one shard can hold (ShardStore::kMaxRows: row numbers take 28 bits).
inline constexpr uint64_t kMaxRowsPerShard = (uint64_t{1} << 28) - 1;

// Parses a text-format TrainConfig and validates it (ValidateConfig). Unknown fields
// and syntax errors are reported as "FILE:LINE:COLUMN: what"; a validation error as
// "config FILE: FIELD PATH: what".
Result<config::TrainConfig> LoadConfig(const std::string& path);
Result<config::TrainConfig> ParseConfig(const std::string& text, const std::string& origin);
// The parsing half of LoadConfig, for callers that change the config before validating
// it (LoadConfigWithOverrides: --set may supply what the file leaves out).
Result<config::TrainConfig> ReadConfigFile(const std::string& path);

// Checks what every process relies on, so that servers and workers alike refuse a bad
// config at start-up with a message naming the field:
//   tables: at least one; each named, unique; dim in 1..kMaxDim; shards in 1..kMaxShards;
//     optimizer absent (filled in: adagrad with its defaults) or of a kind with valid
//     hyper-parameters (learning rates > 0, betas in [0, 1), epsilon > 0...);
//     max_rows_per_shard <= kMaxRowsPerShard, when_full (applies at the cap and at the server's
//     memory budget), and expected_rows_per_shard not above the cap;
//   data (when present): every field's table declared;
//   model, trainer (checkpoint included), ps and security: values in range.
Status ValidateConfig(config::TrainConfig* cfg);

// A hash of everything servers and workers must agree on (the table section).
uint64_t TablesFingerprint(const config::TrainConfig& cfg);

// Index of the table with this name, or -1.
int FindTable(const config::TrainConfig& cfg, const std::string& name);

}  // namespace din
