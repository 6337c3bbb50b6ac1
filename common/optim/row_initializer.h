// Initial weights of a new row, a pure function of (table seed, ID, coordinate): the
// same ID gets the same vector whatever the shard count or the order IDs arrive in.
#pragma once

#include <cstdint>

#include "common/proto/config.pb.h"

namespace din {

class RowInitializer {
 public:
  RowInitializer(const config::Initializer& cfg, uint64_t table_seed);
  // Writes `dim` initial weights of row `id` into `out`.
  void Fill(uint64_t id, float* out, uint32_t dim) const;

 private:
  config::Initializer::Kind kind_;
  float stddev_, range_, value_;
  uint64_t seed_;
};

}  // namespace din
