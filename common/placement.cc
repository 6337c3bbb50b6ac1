#include "common/placement.h"

#include <algorithm>
#include <sstream>

#include <glog/logging.h>

namespace din {

Placement::Placement(const config::TrainConfig& cfg, std::vector<int> lanes)
    : lanes_(std::move(lanes)) {
  CHECK(!lanes_.empty());
  for (const auto& t : cfg.tables()) {
    offset_.push_back(total_);
    shards_.push_back(t.shards());
    total_ += t.shards();
  }
  lane_offset_.push_back(0);
  for (int l : lanes_) {
    CHECK_GE(l, 1);
    lane_offset_.push_back(lane_offset_.back() + l);
  }
}

int Placement::DestServer(int dest) const {
  return static_cast<int>(std::upper_bound(lane_offset_.begin(), lane_offset_.end(), dest) -
                          lane_offset_.begin()) -
         1;
}

std::string Placement::Describe(const config::TrainConfig& cfg) const {
  std::ostringstream os;
  os << "placement: " << num_servers() << " server(s), " << total_
     << " shard(s); shard(id) = Mix64(id) mod shards; global shard g -> server g mod "
     << num_servers() << "\n";
  for (int t = 0; t < num_tables(); ++t) {
    os << "  table " << cfg.tables(t).name() << " (dim " << cfg.tables(t).dim() << ", "
       << shards_[t] << " shards):";
    for (uint32_t s = 0; s < shards_[t]; ++s) {
      const uint32_t g = GlobalShard(t, s);
      os << " " << s << "->" << ServerOf(g) << "/" << LaneOf(g);
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace din
