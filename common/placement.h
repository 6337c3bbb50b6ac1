// Where every shard lives: shard s of table t -> (server, lane).
//
// Shards of all tables are numbered globally in config order (table 0's shards first).
// Global shard g goes to server g mod S, so every server holds the same number of
// shards give or take one, and each table is spread round-robin over the servers.
// Within a server, its k-th shard (k = g div S) is served by lane k mod L, where L is
// the number of lanes (threads with their own socket) that server opened.
// Servers and clients compute the same placement from the config and the lane counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/proto/config.pb.h"

namespace din {

class Placement {
 public:
  // `lanes[s]` = number of lanes server s serves (>= 1).
  Placement(const config::TrainConfig& cfg, std::vector<int> lanes);

  int num_servers() const { return static_cast<int>(lanes_.size()); }
  int num_tables() const { return static_cast<int>(shards_.size()); }
  uint32_t shards(int table) const { return shards_[table]; }
  uint32_t global_shards() const { return total_; }
  uint32_t GlobalShard(int table, uint32_t shard) const { return offset_[table] + shard; }
  int ServerOf(uint32_t global_shard) const {
    return static_cast<int>(global_shard % lanes_.size());
  }
  int LaneOf(uint32_t global_shard) const {
    const int s = ServerOf(global_shard);
    return static_cast<int>((global_shard / lanes_.size()) % lanes_[s]);
  }
  int lanes(int server) const { return lanes_[server]; }
  // Destination index of (server, lane), dense over all lanes of all servers.
  int DestOf(uint32_t global_shard) const {
    return lane_offset_[ServerOf(global_shard)] + LaneOf(global_shard);
  }
  int num_dests() const { return lane_offset_.back(); }
  int DestServer(int dest) const;
  int DestLane(int dest) const { return dest - lane_offset_[DestServer(dest)]; }

  // A human-readable table of the placement, printed at start-up.
  std::string Describe(const config::TrainConfig& cfg) const;

 private:
  std::vector<uint32_t> shards_;
  std::vector<uint32_t> offset_;
  uint32_t total_ = 0;
  std::vector<int> lanes_;
  std::vector<int> lane_offset_;  // size S+1
};

}  // namespace din
