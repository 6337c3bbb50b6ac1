// Dice's batch statistics over the global batch (docs/design.md §10): with several
// workers each backend sees only its share of a step, and Dice would normalise with that
// share's mean and variance. A BatchStatsSync given to the backend sums the statistics
// over every worker of the step, so every worker normalises with the global batch's
// statistics and W workers compute one worker's model.
//
// Collective: every worker's backend calls SumOverWorkers the same number of times, with
// the same sizes, in the same order during a TrainStep -- also a worker without samples
// in the step (TrainStep of an empty batch). Not thread-safe: one caller.
#pragma once

#include <span>

#include "common/status.h"

namespace din::model {

class BatchStatsSync {
 public:
  virtual ~BatchStatsSync() = default;
  // Replaces `values` by their element-wise sum over the workers. A failure is kept
  // (status()) and the values are left as they are; the caller checks status() after
  // the step.
  virtual void SumOverWorkers(std::span<double> values) = 0;
  virtual Status status() const = 0;
};

}  // namespace din::model
