// Dice statistics summed over workers (worker/model/batch_stats_sync.h): two backends on
// two threads stand for two workers of one step, joined by an in-process BatchStatsSync.
// The global batch of the step is known, so each case has an exact single-backend answer
// to compare with. Every case runs on the CPU backend and on the CUDA backend (skipped
// without a usable device; model_batch_stats_sync_emu_test runs them on the CUDA
// emulation), and a CPU worker syncing with a CUDA worker must compute what two CPU
// workers compute.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/worker/model/model_test_util.h"
#include "worker/model/backend.h"

namespace din::model {
namespace {

using test::ExpectRunningNear;
using test::ExpectTensorsNear;
using test::ExpectVectorsNear;
using test::MakeProblem;
using test::Problem;
using test::ProblemOptions;

// Sums over `parties` threads: each adds its values and waits until all have, then reads
// the total; the last reader clears it for the next call. A party missing for 20 s (a
// backend that skipped a sum) breaks the sync instead of hanging the test: waiting and
// later calls return with their values unchanged, and status() says so.
class ThreadSync final : public BatchStatsSync {
 public:
  explicit ThreadSync(int parties) : parties_(parties) {}
  void SumOverWorkers(std::span<double> values) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++calls_;
    // The previous round's readers first.
    if (!cv_.wait_for(lock, kTimeout, [&] { return broken_ || readers_ == 0; })) return Break();
    if (broken_) return;
    if (sum_.size() < values.size()) sum_.resize(values.size(), 0.0);
    for (size_t i = 0; i < values.size(); ++i) sum_[i] += values[i];
    const uint64_t round = round_;
    if (++arrived_ == parties_) {
      arrived_ = 0;
      readers_ = parties_;
      ++round_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lock, kTimeout, [&] { return broken_ || round_ != round; })) {
      return Break();
    }
    if (broken_) return;
    for (size_t i = 0; i < values.size(); ++i) values[i] = sum_[i];
    if (--readers_ == 0) {
      std::fill(sum_.begin(), sum_.end(), 0.0);
      cv_.notify_all();
    }
  }
  Status status() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_ ? Status::Internal("a worker did not take part in a Dice sum within 20 s")
                   : Status::Ok();
  }
  int calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  static constexpr std::chrono::seconds kTimeout{20};
  void Break() {
    broken_ = true;
    cv_.notify_all();
  }
  const int parties_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> sum_;
  int arrived_ = 0, readers_ = 0, calls_ = 0;
  uint64_t round_ = 0;
  bool broken_ = false;
};

// Dice layers of a model (each takes part in one sum in the forward and one in the
// backward of a training step).
int DiceLayers(const ModelLayout& layout) {
  int n = 0;
  for (const auto* mlp : {&layout.attention(), &layout.top()})
    for (const LayerSpec& l : *mlp) n += l.act == math::Act::kDice ? 1 : 0;
  return n;
}

// The same structure as `pb.input` without a sample: what a worker without samples in a
// step trains on.
ModelInput EmptyLike(const ModelInput& in) {
  ModelInput e;
  for (const TableRows& t : in.tables) e.tables.push_back(TableRows{nullptr, 0, t.dim});
  auto empty = [](const std::vector<FieldRows>& fields) {
    std::vector<FieldRows> out;
    for (const FieldRows& f : fields) out.push_back(FieldRows{f.table, {0}, {}});
    return out;
  };
  e.user_fields = empty(in.user_fields);
  e.candidate_fields = empty(in.candidate_fields);
  e.behavior_fields = empty(in.behavior_fields);
  e.context_fields = empty(in.context_fields);
  return e;
}

struct StepResult {
  std::vector<float> grads, running;
  std::vector<std::vector<float>> table_grads;
  float loss = 0;
};

StepResult TrainOnce(ModelBackend& backend, const ModelInput& input,
                     std::span<const float> labels) {
  StepResult r;
  auto loss = backend.TrainStep(input, labels);
  EXPECT_TRUE(loss.ok()) << loss.status().ToString();
  r.loss = loss.ok() ? *loss : 0;
  r.grads.assign(backend.grads().begin(), backend.grads().end());
  r.running.assign(backend.running_stats().begin(), backend.running_stats().end());
  for (int t = 0; t < backend.num_table_grads(); ++t)
    r.table_grads.emplace_back(backend.table_grad(t).begin(), backend.table_grad(t).end());
  return r;
}

std::unique_ptr<ModelBackend> Create(const std::string& kind, const Problem& pb) {
  auto b = CreateBackend(kind, pb.config, pb.dims);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(b).value() : nullptr;
}

// The backend kind of a case; "cuda" cases skip where no CUDA device is usable.
class BatchStatsSyncTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda" && CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  }
};

// Worker 0 has the whole batch, worker 1 none: the global batch is worker 0's, so worker
// 0 must compute exactly what a backend without any sync computes, and worker 1 (whose
// gradients are weighted by its 0 samples) takes part without contributing.
TEST_P(BatchStatsSyncTest, AWorkerWithoutSamplesChangesNothing) {
  Problem pb = MakeProblem(ProblemOptions{});
  ASSERT_GT(pb.config.attention_hidden_size(), 0);
  auto alone = Create(GetParam(), pb);
  auto w0 = Create(GetParam(), pb);
  auto w1 = Create(GetParam(), pb);
  ASSERT_TRUE(alone != nullptr && w0 != nullptr && w1 != nullptr);
  const StepResult want = TrainOnce(*alone, pb.input, pb.labels);

  ThreadSync sync(2);
  ASSERT_TRUE(w0->SetBatchStatsSync(&sync).ok());
  ASSERT_TRUE(w1->SetBatchStatsSync(&sync).ok());
  const ModelInput empty = EmptyLike(pb.input);
  StepResult got0, got1;
  std::thread t1([&] { got1 = TrainOnce(*w1, empty, {}); });
  got0 = TrainOnce(*w0, pb.input, pb.labels);
  t1.join();
  EXPECT_TRUE(sync.status().ok()) << sync.status().ToString();
  ASSERT_GT(DiceLayers(alone->layout()), 0);
  EXPECT_EQ(sync.calls(), 2 * 2 * DiceLayers(alone->layout()))
      << "2 workers, 2 sums per Dice layer";
  ExpectTensorsNear<float, float>(got0.grads, want.grads, alone->layout(), 1e-5, "dense gradients");
  for (size_t t = 0; t < want.table_grads.size(); ++t)
    ExpectVectorsNear<float, float>(got0.table_grads[t], want.table_grads[t], 1e-5,
                                    "table gradients");
  ExpectRunningNear<float, float>(got0.running, want.running, alone->layout(), 1e-6,
                                  "running statistics");
  EXPECT_EQ(got1.running, got0.running) << "every worker keeps the same running statistics";
  EXPECT_FLOAT_EQ(got0.loss, want.loss);
  for (float g : got1.grads) ASSERT_EQ(g, 0.0f) << "a worker without samples has no gradient";
}

// Both workers have the same batch: the global batch is two copies of it, whose
// statistics and mean loss equal one copy's, so each worker's gradients (of its own mean
// loss) equal one backend's on one copy. Also with several hundred attention positions
// (the CUDA backend's column sums then span several chunks).
TEST_P(BatchStatsSyncTest, TwoEqualSharesGiveOneSharesGradients) {
  for (const ProblemOptions& o :
       {ProblemOptions{.batch = 5, .seed = 3},
        ProblemOptions{.batch = 90, .max_history = 8, .longest_list = 10, .seed = 4}}) {
    SCOPED_TRACE("batch " + std::to_string(o.batch));
    Problem pb = MakeProblem(o);
    auto alone = Create(GetParam(), pb);
    auto w0 = Create(GetParam(), pb);
    auto w1 = Create(GetParam(), pb);
    ASSERT_TRUE(alone != nullptr && w0 != nullptr && w1 != nullptr);
    const StepResult want = TrainOnce(*alone, pb.input, pb.labels);

    ThreadSync sync(2);
    ASSERT_TRUE(w0->SetBatchStatsSync(&sync).ok());
    ASSERT_TRUE(w1->SetBatchStatsSync(&sync).ok());
    StepResult got0, got1;
    std::thread t1([&] { got1 = TrainOnce(*w1, pb.input, pb.labels); });
    got0 = TrainOnce(*w0, pb.input, pb.labels);
    t1.join();
    for (const StepResult* got : {&got0, &got1}) {
      ExpectTensorsNear<float, float>(got->grads, want.grads, alone->layout(), 1e-5,
                                      "dense gradients");
      for (size_t t = 0; t < want.table_grads.size(); ++t)
        ExpectVectorsNear<float, float>(got->table_grads[t], want.table_grads[t], 1e-5,
                                        "table gradients");
    }
    // The running variance takes the unbiased variance over 2n rows, not n: not equal to
    // one copy's, but equal on both workers.
    EXPECT_EQ(got0.running, got1.running);
    EXPECT_TRUE(sync.status().ok()) << sync.status().ToString();
  }
}

// Two workers with kinds[0] and kinds[1] backends: worker 0 trains on A, worker 1 on A
// with its labels flipped. Returns the global mean loss and both workers' results.
std::tuple<double, StepResult, StepResult> TwoWorkerStep(ModelBackend& w0, ModelBackend& w1,
                                                         const Problem& pb,
                                                         std::span<const float> flipped,
                                                         std::span<const float> params) {
  std::copy(params.begin(), params.end(), w0.params().begin());
  std::copy(params.begin(), params.end(), w1.params().begin());
  StepResult a, b;
  std::thread t1([&] { b = TrainOnce(w1, pb.input, flipped); });
  a = TrainOnce(w0, pb.input, pb.labels);
  t1.join();
  return std::make_tuple(0.5 * (static_cast<double>(a.loss) + b.loss), a, b);
}

std::vector<float> Flipped(const std::vector<float>& labels) {
  std::vector<float> flipped(labels.size());
  for (size_t i = 0; i < flipped.size(); ++i) flipped[i] = 1.0f - labels[i];
  return flipped;
}

// Unequal shares: worker 0 has sample set A (6 samples), worker 1 the same samples plus
// others is not constructible here; instead A on worker 0 and A on worker 1 with its
// labels flipped. The step's mean loss is then the mean of both, and the gradient of the
// global loss is the average of the two workers' gradients -- which differs from either
// worker alone, so a sync that ignored the other worker's statistics or gradient scale
// would be caught by comparing with finite differences of the global loss.
TEST_P(BatchStatsSyncTest, UnequalLabelsMatchTheGlobalLossGradient) {
  Problem pb = MakeProblem(ProblemOptions{.batch = 4, .seed = 5});
  const std::vector<float> flipped = Flipped(pb.labels);
  auto w0 = Create(GetParam(), pb);
  auto w1 = Create(GetParam(), pb);
  ASSERT_TRUE(w0 != nullptr && w1 != nullptr);
  ThreadSync sync(2);
  ASSERT_TRUE(w0->SetBatchStatsSync(&sync).ok());
  ASSERT_TRUE(w1->SetBatchStatsSync(&sync).ok());
  std::vector<float> params(w0->params().begin(), w0->params().end());
  auto [loss, a, b] = TwoWorkerStep(*w0, *w1, pb, flipped, params);
  // The global gradient: each worker's (of its own mean) times its 4 samples, over 8.
  std::vector<double> grad(params.size());
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = 0.5 * (a.grads[i] + b.grads[i]);
  // Central differences of the global loss on a spread of parameters (fewer on the CUDA
  // backend, whose steps are slow on the emulation under the sanitizers).
  const float h = 1e-2f;
  const size_t spread = GetParam() == "cuda" ? 24 : 40;
  int checked = 0;
  for (size_t i = 0; i < params.size(); i += std::max<size_t>(1, params.size() / spread)) {
    std::vector<float> p = params;
    p[i] = params[i] + h;
    const double up = std::get<0>(TwoWorkerStep(*w0, *w1, pb, flipped, p));
    p[i] = params[i] - h;
    const double down = std::get<0>(TwoWorkerStep(*w0, *w1, pb, flipped, p));
    const double fd = (up - down) / (2 * h);
    EXPECT_NEAR(grad[i], fd, 2e-3 + 2e-2 * std::abs(fd)) << "parameter " << i;
    ++checked;
  }
  EXPECT_GT(checked, 20);
  EXPECT_TRUE(sync.status().ok()) << sync.status().ToString();
}

INSTANTIATE_TEST_SUITE_P(Backends, BatchStatsSyncTest, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

// A CPU worker and a CUDA worker syncing with each other (the unequal shares above)
// compute what two CPU workers compute: the CUDA backend sends and reads the same sums.
TEST(BatchStatsSyncMixedTest, CpuAndCudaWorkersAgreeWithTwoCpuWorkers) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  Problem pb = MakeProblem(ProblemOptions{.batch = 6, .seed = 8});
  const std::vector<float> flipped = Flipped(pb.labels);
  auto c0 = Create("cpu", pb), c1 = Create("cpu", pb);
  auto m0 = Create("cpu", pb), m1 = Create("cuda", pb);
  ASSERT_TRUE(c0 != nullptr && c1 != nullptr && m0 != nullptr && m1 != nullptr);
  ThreadSync cpu_sync(2), mixed_sync(2);
  ASSERT_TRUE(c0->SetBatchStatsSync(&cpu_sync).ok());
  ASSERT_TRUE(c1->SetBatchStatsSync(&cpu_sync).ok());
  ASSERT_TRUE(m0->SetBatchStatsSync(&mixed_sync).ok());
  ASSERT_TRUE(m1->SetBatchStatsSync(&mixed_sync).ok());
  const std::vector<float> params(c0->params().begin(), c0->params().end());
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    auto [want_loss, want0, want1] = TwoWorkerStep(*c0, *c1, pb, flipped, params);
    auto [got_loss, got0, got1] = TwoWorkerStep(*m0, *m1, pb, flipped, params);
    EXPECT_NEAR(got_loss, want_loss, 1e-5 * std::abs(want_loss));
    const std::pair<const StepResult*, const StepResult*> pairs[] = {{&got0, &want0},
                                                                     {&got1, &want1}};
    for (const auto& [got, want] : pairs) {
      ExpectTensorsNear<float, float>(got->grads, want->grads, c0->layout(), 1e-4,
                                      "dense gradients");
      for (size_t t = 0; t < want->table_grads.size(); ++t)
        ExpectVectorsNear<float, float>(got->table_grads[t], want->table_grads[t], 1e-4,
                                        "table gradients");
      ExpectRunningNear<float, float>(got->running, want->running, c0->layout(), 1e-5,
                                      "running statistics");
    }
  }
  EXPECT_TRUE(mixed_sync.status().ok()) << mixed_sync.status().ToString();
}

}  // namespace
}  // namespace din::model
