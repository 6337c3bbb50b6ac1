#include "common/optim/row_initializer.h"

#include <cmath>
#include <numbers>

#include "common/hash.h"

namespace din {

RowInitializer::RowInitializer(const config::Initializer& cfg, uint64_t table_seed)
    : kind_(cfg.kind()),
      stddev_(cfg.stddev()),
      range_(cfg.range()),
      value_(cfg.value()),
      seed_(Mix64(table_seed ^ 0x6a09e667f3bcc909ULL)) {}

void RowInitializer::Fill(uint64_t id, float* out, uint32_t dim) const {
  const uint64_t key = Mix64(seed_ ^ Mix64(id));
  switch (kind_) {
    case config::Initializer::ZEROS:
      for (uint32_t i = 0; i < dim; ++i) out[i] = 0.0f;
      return;
    case config::Initializer::CONSTANT:
      for (uint32_t i = 0; i < dim; ++i) out[i] = value_;
      return;
    case config::Initializer::UNIFORM:
      for (uint32_t i = 0; i < dim; ++i)
        out[i] = static_cast<float>((2.0 * UniformAt(key, i) - 1.0) * range_);
      return;
    case config::Initializer::NORMAL:
    case config::Initializer::TRUNCATED_NORMAL: {
      // Box-Muller on two counter-based uniforms per coordinate; a truncated draw that
      // falls outside +-2 stddev is redrawn from the next counters (a fixed sequence).
      const bool truncate = kind_ == config::Initializer::TRUNCATED_NORMAL;
      for (uint32_t i = 0; i < dim; ++i) {
        uint64_t k = static_cast<uint64_t>(i) << 20;
        double z;
        do {
          const double u1 = 1.0 - UniformAt(key, k++);  // (0, 1]
          const double u2 = UniformAt(key, k++);
          z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
        } while (truncate && std::fabs(z) > 2.0);
        out[i] = static_cast<float>(z * stddev_);
      }
      return;
    }
  }
}

}  // namespace din
