// The workers' end-to-end check of the parameter servers (din_worker --mode=selfcheck):
// every worker pulls a block of IDs of its own (creating the rows), pushes known
// gradients, pulls again and checks that each row moved exactly as the table's optimizer
// prescribes (common/optim computes the reference); it also checks that evaluation pulls
// of unknown IDs read zeros and create nothing. Worker 0 prints one JSON line of figures.
#pragma once

#include "common/net/cluster.h"
#include "common/proto/config.pb.h"
#include "common/status.h"

namespace din {

struct SelfCheckOptions {
  int ids = 100000;  // IDs per worker and table
  int rounds = 3;    // push/pull rounds
};

// Collective over the workers; fails (Internal, naming the table and row) on the first
// mismatch.
Status SelfCheck(const config::TrainConfig& cfg, Cluster& cluster, SelfCheckOptions options);

}  // namespace din
