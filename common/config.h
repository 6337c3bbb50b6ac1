// Loading and validating the training configuration (common/proto/config.proto).
#pragma once

#include <cstdint>
#include <string>

#include "common/proto/config.pb.h"
#include "common/status.h"

namespace din {

// Parses a text-format TrainConfig and validates it (ValidateConfig). Unknown fields
// and syntax errors are reported with the file's line and column.
Result<config::TrainConfig> LoadConfig(const std::string& path);
Result<config::TrainConfig> ParseConfig(const std::string& text, const std::string& origin);

// Checks what every process relies on: tables named, unique, dim in 1..4096, shards
// in 1..65536, optimizer hyper-parameters in range. Fills in the default optimizer.
Status ValidateConfig(config::TrainConfig* cfg);

// A hash of everything servers and workers must agree on (the table section).
uint64_t TablesFingerprint(const config::TrainConfig& cfg);

// Index of the table with this name, or -1.
int FindTable(const config::TrainConfig& cfg, const std::string& name);

}  // namespace din
