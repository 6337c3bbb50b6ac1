// StepControl (worker/step_control.h): the figures that ride on the per-step all-reduce
// survive packing, sit right after the dense gradients without touching them, and their
// element-wise sum over the workers means what the trainer reads from it.
#include <vector>

#include <gtest/gtest.h>

#include "worker/step_control.h"

namespace din {
namespace {

TEST(StepControlTest, PackUnpackRoundTripsEveryField) {
  const StepControl in{1.0f, 12.5f, 64.0f, 1.0f, 0.0f};
  std::vector<float> buf(StepControl::kFloats, -7.0f);
  in.PackInto(buf);
  const StepControl out = StepControl::Unpack(buf);
  EXPECT_EQ(out.has_batch, 1.0f);
  EXPECT_EQ(out.loss_sum, 12.5f);
  EXPECT_EQ(out.samples, 64.0f);
  EXPECT_EQ(out.checkpoint_due, 1.0f);
  EXPECT_EQ(out.stop_requested, 0.0f);
}

TEST(StepControlTest, PacksAfterTheGradientsWithoutTouchingThem) {
  // The trainer's buffer: n dense gradients, then the control floats.
  const size_t n = 3;
  std::vector<float> buf = {0.5f, -1.5f, 2.0f, 0, 0, 0, 0, 0, 0};
  ASSERT_EQ(buf.size(), n + StepControl::kFloats);
  StepControl{1, 2, 3, 4, 5, 6}.PackInto(std::span<float>(buf).subspan(n));
  EXPECT_EQ(buf, (std::vector<float>{0.5f, -1.5f, 2.0f, 1, 2, 3, 4, 5, 6}));
}

// What the all-reduce does: element-wise sums of every worker's packed floats.
StepControl SumOver(const std::vector<StepControl>& workers) {
  std::vector<float> sum(StepControl::kFloats, 0.0f), one(StepControl::kFloats);
  for (const auto& w : workers) {
    w.PackInto(one);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += one[i];
  }
  return StepControl::Unpack(sum);
}

TEST(StepControlTest, SumOverWorkersMeansWhatTheTrainerReads) {
  // Worker 0: a batch of 32, its clock says a checkpoint is due. Worker 1: out of data.
  // Worker 2: a batch of 17 and a stop request.
  StepControl w0{1, 0.25f * 32, 32, 1, 0, 1}, w1{}, w2{1, 0.5f * 17, 17, 0, 1, 0};
  const StepControl all = SumOver({w0, w1, w2});
  EXPECT_TRUE(all.any_batch());
  EXPECT_EQ(all.has_batch, 2.0f) << "the dense gradient is averaged over 2 workers";
  EXPECT_EQ(all.sample_count(), 49u);
  EXPECT_FLOAT_EQ(all.loss_sum, 8.0f + 8.5f);
  EXPECT_TRUE(all.checkpoint());
  EXPECT_TRUE(all.stop());
  EXPECT_TRUE(all.dump()) << "worker 0's clock says a periodic dump is due";

  const StepControl none = SumOver({StepControl{}, StepControl{}});
  EXPECT_FALSE(none.any_batch()) << "every worker is out of data";
  EXPECT_EQ(none.sample_count(), 0u);
  EXPECT_FALSE(none.checkpoint());
  EXPECT_FALSE(none.stop());
  EXPECT_FALSE(none.dump());
}

TEST(StepControlTest, SampleCountRoundsTheFloatSum) {
  StepControl c;
  c.samples = 99.9999f;
  EXPECT_EQ(c.sample_count(), 100u);
  c.samples = 1e6f;
  EXPECT_EQ(c.sample_count(), 1000000u);
}

}  // namespace
}  // namespace din
