// The figures every worker adds to the per-step all-reduce, after its dense gradients:
// whether it had a batch, its loss and sample count, and the two signals that make all
// workers checkpoint or stop at the same step. Summed over the workers, they tell every
// worker the same thing, so the agreement costs no extra message.
//
// A plain value; no thread safety concerns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <glog/logging.h>

namespace din {

struct StepControl {
  float has_batch = 0;       // 1 when the worker had a batch; summed: the workers that had one
  float loss_sum = 0;        // mean loss of its batch times the batch size
  float samples = 0;         // the batch size
  float checkpoint_due = 0;  // 1 on worker 0 when its clock says a checkpoint is due
  float stop_requested = 0;  // 1 when the worker got a stop request (RequestStop)
  float dump_due = 0;        // 1 on worker 0 when its clock says a periodic dump is due

  static constexpr size_t kFloats = 6;

  // Writes the fields, in declaration order, to out[0 .. kFloats).
  void PackInto(std::span<float> out) const {
    CHECK_GE(out.size(), kFloats);
    out[0] = has_batch;
    out[1] = loss_sum;
    out[2] = samples;
    out[3] = checkpoint_due;
    out[4] = stop_requested;
    out[5] = dump_due;
  }
  static StepControl Unpack(std::span<const float> in) {
    CHECK_GE(in.size(), kFloats);
    return StepControl{in[0], in[1], in[2], in[3], in[4], in[5]};
  }

  // Meanings of the sums over the workers.
  bool any_batch() const { return has_batch >= 0.5f; }  // false: every worker is out of data
  uint64_t sample_count() const { return static_cast<uint64_t>(samples + 0.5f); }
  bool checkpoint() const { return checkpoint_due > 0.5f; }
  bool stop() const { return stop_requested > 0.5f; }
  bool dump() const { return dump_due > 0.5f; }
};
// A field added without updating PackInto/Unpack (and kFloats) fails here.
static_assert(sizeof(StepControl) == StepControl::kFloats * sizeof(float));

}  // namespace din
