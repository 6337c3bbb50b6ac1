// Job configs written in a test: parsing them, and the text of their tables.
#pragma once

#include <string>

#include <glog/logging.h>

#include "common/config.h"

namespace din::test {

// `text` parsed and validated as a job config. A test's own config that does not parse
// is a bug in the test: the program stops with the parser's message.
inline config::TrainConfig MustParse(const std::string& text) {
  auto cfg = ParseConfig(text, "test-config");
  CHECK(cfg.ok()) << cfg.status().ToString();
  return *cfg;
}

// One `tables { ... }` entry: its name, dim and shard count, then `more` (seed,
// initializer, optimizer, ... as config text).
inline std::string Table(const std::string& name, int dim, int shards,
                         const std::string& more = "") {
  return "tables { name: \"" + name + "\" dim: " + std::to_string(dim) +
         " shards: " + std::to_string(shards) + " " + more + " }\n";
}

// The job config of the client/server tests: two tables, and requests that time out
// after 10 s.
//   0 "exact": dim 4, 5 shards, every row starting at 0.25, SGD with learning rate 0.5,
//              so that the values after a push are exact in float;
//   1 "emb":   dim 16, 3 shards, seed 9, Adagrad.
inline config::TrainConfig TwoTableConfig() {
  return MustParse(Table("exact", 4, 5,
                         "initializer { kind: CONSTANT value: 0.25 } "
                         "optimizer { sgd { learning_rate: 0.5 } }") +
                   Table("emb", 16, 3, "seed: 9 optimizer { adagrad {} }") +
                   "ps { request_timeout_ms: 10000 }\n");
}

}  // namespace din::test
