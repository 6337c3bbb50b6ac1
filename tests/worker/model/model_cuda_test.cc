// The CUDA backend against the CPU backend (itself checked against finite differences
// in double precision) on the same inputs and parameters. Every test is skipped when no
// CUDA device is usable; without CUDA support in the build, CreateBackend("cuda") must
// fail with a clear error instead. The same source runs on a GPU (model_cuda_test) and
// on the CPU emulation of CUDA (model_cuda_emu_test, worker/model/cuda_emu).
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/model_config.pb.h"
#include "tests/worker/model/model_test_util.h"
#include "worker/model/backend.h"

namespace din::model {
namespace {

using test::MakeProblem;
using test::Problem;
using test::ProblemOptions;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DIN_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DIN_TEST_SANITIZED 1
#endif
#endif
#if defined(DIN_TEST_SANITIZED)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

#define DIN_REQUIRE_CUDA()                                                    \
  do {                                                                        \
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device here"; \
  } while (0)

struct Pair {
  std::unique_ptr<ModelBackend> cpu, cuda;
};

Pair MakePair(const Problem& pb) {
  Pair p;
  p.cpu = CreateBackend("cpu", pb.config, pb.dims).value();
  auto cuda = CreateBackend("cuda", pb.config, pb.dims);
  EXPECT_TRUE(cuda.ok()) << cuda.status().ToString();
  if (cuda.ok()) p.cuda = std::move(cuda).value();
  return p;
}

// |actual − expected| ≤ rtol · max |expected| + 1e-7 for every entry: each tensor is
// compared at its own scale, so errors in a small tensor (a Dice α, the attention MLP)
// are not hidden behind the largest gradient of the model.
void ExpectTensorNear(std::span<const float> actual, std::span<const float> expected, double rtol,
                      const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double scale = 0, worst = -1;
  size_t at = 0;
  for (float e : expected) scale = std::max(scale, std::abs(double(e)));
  for (size_t i = 0; i < actual.size(); ++i) {
    const double d = std::abs(double(actual[i]) - double(expected[i]));
    if (!(d <= worst)) {  // NaN counts as worst
      worst = d;
      at = i;
    }
  }
  if (actual.empty()) return;
  EXPECT_LE(worst, rtol * scale + 1e-7)
      << what << ": worst at " << at << " of " << actual.size() << " (" << actual[at] << " vs "
      << expected[at] << ", tensor scale " << scale << ")";
}

// Every dense gradient tensor, every Dice layer's running mean and variance and every
// table's gradient, each at its own scale.
void ExpectSameState(ModelBackend& got, ModelBackend& want, double rtol, const std::string& at) {
  const ModelLayout& layout = want.layout();
  for (const ParamTensor& t : layout.tensors())
    ExpectTensorNear(
        std::span<const float>(got.grads()).subspan(t.offset, size_t(t.rows) * t.cols),
        std::span<const float>(want.grads()).subspan(t.offset, size_t(t.rows) * t.cols), rtol,
        at + " grad " + t.name);
  for (const auto* mlp : {&layout.attention(), &layout.top()})
    for (const LayerSpec& l : *mlp)
      if (l.act == math::Act::kDice)
        for (int v = 0; v < 2; ++v)
          ExpectTensorNear(
              std::span<const float>(got.running_stats()).subspan(l.running + v * l.out, l.out),
              std::span<const float>(want.running_stats()).subspan(l.running + v * l.out, l.out),
              rtol,
              at + " running " + (v == 0 ? "mean" : "var") + " of Dice layer at " +
                  std::to_string(l.running));
  ASSERT_EQ(got.num_table_grads(), want.num_table_grads());
  for (int t = 0; t < want.num_table_grads(); ++t)
    ExpectTensorNear(got.table_grad(t), want.table_grad(t), rtol,
                     at + " table " + std::to_string(t) + " grad");
}

// Trains both backends for two steps on the same batch (the same SGD update applied to
// both; each keeps its own running statistics), then evaluates with the running
// statistics; compares everything they return, each tensor at relative tolerance rtol.
void ExpectParity(Problem& pb, const std::string& what, double rtol = 1e-4) {
  Pair p = MakePair(pb);
  ASSERT_NE(p.cuda, nullptr);
  EXPECT_EQ(p.cuda->name(), "cuda");
  ASSERT_TRUE(std::ranges::equal(p.cpu->params(), p.cuda->params())) << "same seed, same init";
  for (int step = 0; step < 2; ++step) {
    const std::string at = what + " step " + std::to_string(step);
    auto lc = p.cpu->TrainStep(pb.input, pb.labels);
    auto lg = p.cuda->TrainStep(pb.input, pb.labels);
    ASSERT_TRUE(lc.ok()) << lc.status().ToString();
    ASSERT_TRUE(lg.ok()) << lg.status().ToString();
    EXPECT_NEAR(*lg, *lc, rtol * std::max(1.0f, std::abs(*lc))) << at;
    ExpectTensorNear(p.cuda->logits(), p.cpu->logits(), rtol, at + " logits");
    ExpectSameState(*p.cuda, *p.cpu, rtol, at);
    // Same SGD step on both, so the second step runs on moved parameters.
    for (size_t i = 0; i < p.cpu->params().size(); ++i) {
      p.cpu->params()[i] -= 0.5f * p.cpu->grads()[i];
      p.cuda->params()[i] = p.cpu->params()[i];
    }
  }
  std::vector<float> ec(pb.input.batch_size), eg(pb.input.batch_size);
  ASSERT_TRUE(p.cpu->Predict(pb.input, ec).ok());
  auto st = p.cuda->Predict(pb.input, eg);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ExpectTensorNear(eg, ec, rtol, what + " eval logits (running statistics)");
}

// A problem at the model's default sizes (model_bench's): dim 16 per field (item and
// category, so an item embedding of 32), attention MLP 80/40, top MLP 200/80, histories of 0 to 60
// behaviours (those past max_history 50 are truncated), a multi-valued user field and a context
// field.
Problem MakeWideProblem(int batch, uint64_t seed = 11) {
  Problem pb;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> val(-0.5f, 0.5f);
  auto pick = [&](int n) { return static_cast<uint32_t>(rng() % n); };
  const int dims[4] = {16, 16, 16, 8};
  const int rows[4] = {3000, 200, 500, 50};
  pb.config.set_max_history(50);
  for (int h : {80, 40}) pb.config.add_attention_hidden(h);
  for (int h : {200, 80}) pb.config.add_top_hidden(h);
  pb.dims.candidate = {16, 16};
  pb.dims.user = {16};
  pb.dims.context = {8};
  ModelInput& in = pb.input;
  in.batch_size = batch;
  pb.tables_f.resize(4);
  pb.tables_d.resize(4);
  in.tables.resize(4);
  for (int t = 0; t < 4; ++t) {
    pb.tables_f[t].resize(static_cast<size_t>(rows[t]) * dims[t]);
    for (float& v : pb.tables_f[t]) v = val(rng);
    in.tables[t] = TableRows{nullptr, static_cast<uint32_t>(rows[t]), dims[t]};
  }
  FieldRows ci, cc, hi, hc, user, ctx;
  ci.table = hi.table = 0;
  cc.table = hc.table = 1;
  user.table = 2;
  ctx.table = 3;
  for (int b = 0; b < batch; ++b) {
    ci.rows.push_back(pick(rows[0]));
    cc.rows.push_back(pick(rows[1]));
    ci.offsets.push_back(b + 1);
    cc.offsets.push_back(b + 1);
    const int len = b == 0 ? 60 : b == 1 ? 0 : static_cast<int>(pick(61));
    for (int j = 0; j < len; ++j) {
      // Popular items repeat within and across samples.
      hi.rows.push_back(j % 3 == 0 ? pick(20) : pick(rows[0]));
      hc.rows.push_back(pick(rows[1]));
    }
    hi.offsets.push_back(static_cast<uint32_t>(hi.rows.size()));
    hc.offsets.push_back(static_cast<uint32_t>(hc.rows.size()));
    for (int j = static_cast<int>(pick(4)); j > 0; --j) user.rows.push_back(pick(rows[2]));
    user.offsets.push_back(static_cast<uint32_t>(user.rows.size()));
    ctx.rows.push_back(pick(rows[3]));
    ctx.offsets.push_back(static_cast<uint32_t>(ctx.rows.size()));
    pb.labels.push_back(static_cast<float>(pick(2)));
  }
  in.candidate_fields = {ci, cc};
  in.behavior_fields = {hi, hc};
  in.user_fields = {user};
  in.context_fields = {ctx};
  pb.SyncFromFloat();
  return pb;
}

TEST(CudaBackendTest, DeviceFromLocalRank) {
  EXPECT_EQ(ChooseCudaDevice(4, nullptr), 0);
  EXPECT_EQ(ChooseCudaDevice(4, "0"), 0);
  EXPECT_EQ(ChooseCudaDevice(4, "3"), 3);
  EXPECT_EQ(ChooseCudaDevice(4, "6"), 2);
  EXPECT_EQ(ChooseCudaDevice(1, "5"), 0);
  EXPECT_EQ(ChooseCudaDevice(4, "x"), 0);
  EXPECT_EQ(ChooseCudaDevice(4, "-1"), 0);
  EXPECT_EQ(ChooseCudaDevice(0, "2"), 0);
}

TEST(CudaBackendTest, NoDeviceIsAClearError) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  Problem pb = MakeProblem(ProblemOptions{});
  auto cuda = CreateBackend("cuda", pb.config, pb.dims);
  ASSERT_FALSE(cuda.ok());
  EXPECT_NE(cuda.status().message().find("CUDA"), std::string::npos) << cuda.status().ToString();
  EXPECT_EQ(CreateBackend("auto", pb.config, pb.dims).value()->name(), "cpu");
}

struct ParityCase {
  std::string name;
  config::ModelConfig::Pooling pooling;
  config::ModelConfig::Activation activation;
  bool softmax;
};
void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.name; }

class CudaParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(CudaParityTest, SmallProblemMatchesCpu) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  Problem pb = MakeProblem(ProblemOptions{});
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ExpectParity(pb, c.name);
}

// Larger than one reduction chunk (256 rows) so the chunked column sums are exercised.
TEST_P(CudaParityTest, LargeBatchMatchesCpu) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  ProblemOptions o;
  o.batch = 300;
  o.max_history = 20;
  o.longest_list = 30;
  o.item_rows = 500;
  o.cate_rows = 40;
  Problem pb = MakeProblem(o);
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ExpectParity(pb, c.name);
}

// The model's default sizes: multi-block reductions, GEMMs of hundreds of columns.
TEST_P(CudaParityTest, DefaultSizesBatchOf1) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  Problem pb = MakeWideProblem(1);
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  ExpectParity(pb, c.name + " batch 1");
}

TEST_P(CudaParityTest, DefaultSizesBatchOf256) {
  DIN_REQUIRE_CUDA();
  const ParityCase& c = GetParam();
  Problem pb = MakeWideProblem(256);
  pb.config.set_pooling(c.pooling);
  pb.config.set_activation(c.activation);
  pb.config.set_attention_softmax(c.softmax);
  // ReLU and PReLU have a kink at 0: among the ~600k pre-activations of a step, one
  // within rounding of 0 takes the other branch on one backend, which moves that
  // sample's share of every gradient (about 1/256 of a tensor's scale). Smooth
  // activations are held to 1e-4.
  const bool kinked =
      c.activation == config::ModelConfig::RELU || c.activation == config::ModelConfig::PRELU;
  ExpectParity(pb, c.name + " batch 256", kinked ? 2e-2 : 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    AllConfigs, CudaParityTest,
    ::testing::Values(
        ParityCase{"AttentionDice", config::ModelConfig::ATTENTION, config::ModelConfig::DICE,
                   false},
        ParityCase{"AttentionDiceSoftmax", config::ModelConfig::ATTENTION,
                   config::ModelConfig::DICE, true},
        ParityCase{"AttentionPRelu", config::ModelConfig::ATTENTION, config::ModelConfig::PRELU,
                   false},
        ParityCase{"AttentionSigmoid", config::ModelConfig::ATTENTION, config::ModelConfig::SIGMOID,
                   false},
        ParityCase{"AttentionRelu", config::ModelConfig::ATTENTION, config::ModelConfig::RELU,
                   false},
        ParityCase{"SumDice", config::ModelConfig::SUM, config::ModelConfig::DICE, false},
        ParityCase{"SumSigmoid", config::ModelConfig::SUM, config::ModelConfig::SIGMOID, false},
        ParityCase{"MeanRelu", config::ModelConfig::MEAN, config::ModelConfig::RELU, false},
        ParityCase{"MeanPRelu", config::ModelConfig::MEAN, config::ModelConfig::PRELU, false}),
    [](const auto& info) { return info.param.name; });

// 4096 samples (about 100k attention positions): the attention MLP's column reductions
// span many blocks and chunks. Not under the sanitizers (the emulated GEMMs are slow
// there); the main test stage and the GPU check run it.
TEST(CudaBackendTest, DefaultSizesBatchOf4096) {
  DIN_REQUIRE_CUDA();
  if (kSanitized) GTEST_SKIP() << "too slow on the emulation under a sanitizer";
  Problem pb = MakeWideProblem(4096);
  ExpectParity(pb, "attention Dice batch 4096");
}

// Device buffers grow to the largest batch and are reused: after a big batch, a small
// one gives what a fresh backend gives (no stale rows, offsets or statistics).
TEST(CudaBackendTest, BigBatchThenSmallMatchesFreshBackend) {
  DIN_REQUIRE_CUDA();
  Problem big = MakeWideProblem(kSanitized ? 600 : 1024, 5);
  Problem small = MakeWideProblem(7, 6);
  auto used = CreateBackend("cuda", small.config, small.dims).value();
  auto fresh = CreateBackend("cuda", small.config, small.dims).value();
  const std::vector<float> running(used->running_stats().begin(), used->running_stats().end());
  ASSERT_TRUE(used->TrainStep(big.input, big.labels).ok());
  std::ranges::copy(running, used->running_stats().begin());
  auto lu = used->TrainStep(small.input, small.labels);
  auto lf = fresh->TrainStep(small.input, small.labels);
  ASSERT_TRUE(lu.ok() && lf.ok());
  EXPECT_EQ(*lu, *lf);
  ExpectTensorNear(used->logits(), fresh->logits(), 1e-6, "logits after a big batch");
  ExpectSameState(*used, *fresh, 1e-6, "after a big batch");
  std::vector<float> eu(small.input.batch_size), ef(small.input.batch_size);
  std::vector<float> eb(big.input.batch_size);
  ASSERT_TRUE(used->Predict(big.input, eb).ok());
  ASSERT_TRUE(used->Predict(small.input, eu).ok());
  ASSERT_TRUE(fresh->Predict(small.input, ef).ok());
  ExpectTensorNear(eu, ef, 1e-6, "eval logits after a big batch");
}

// The deterministic scatter (the default) gives bit-identical runs; the atomic one agrees
// with it to rounding. On the emulation, blocks run in a different order on each launch,
// so float atomics add in varying orders there as on a GPU.
TEST(CudaBackendTest, DeterministicRunsAreBitIdentical) {
  DIN_REQUIRE_CUDA();
  Problem pb = MakeWideProblem(kSanitized ? 64 : 256, 9);
  auto run = [&](bool deterministic) {
    auto b = CreateBackend("cuda", pb.config, pb.dims).value();
    EXPECT_TRUE(b->SetDeterministic(deterministic).ok());
    EXPECT_TRUE(b->TrainStep(pb.input, pb.labels).ok());
    return b;
  };
  auto a = run(true), b = run(true), atomic = run(false);
  for (int t = 0; t < a->num_table_grads(); ++t) {
    EXPECT_TRUE(std::ranges::equal(a->table_grad(t), b->table_grad(t))) << "table " << t;
    ExpectTensorNear(atomic->table_grad(t), a->table_grad(t), 1e-5,
                     "atomic scatter, table " + std::to_string(t));
  }
  EXPECT_TRUE(std::ranges::equal(a->grads(), b->grads()));
  EXPECT_TRUE(std::ranges::equal(a->logits(), b->logits()));
}

// Truncated behaviours are masked on the GPU too.
TEST(CudaBackendTest, MaskedPositionsChangeNothing) {
  DIN_REQUIRE_CUDA();
  Problem pb = MakeProblem(ProblemOptions{});
  for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
    FieldRows& hist = pb.input.behavior_fields[f];
    const int t = hist.table, d = pb.input.tables[t].dim;
    hist.rows[0] = pb.input.tables[t].rows++;  // sample 0's oldest, beyond max_history
    for (int k = 0; k < d; ++k) pb.tables_f[t].push_back(0.25f);
  }
  pb.SyncFromFloat();
  auto a = CreateBackend("cuda", pb.config, pb.dims).value();
  auto b = CreateBackend("cuda", pb.config, pb.dims).value();
  ASSERT_TRUE(a->TrainStep(pb.input, pb.labels).ok());
  for (size_t f = 0; f < pb.input.behavior_fields.size(); ++f) {
    const int t = pb.input.behavior_fields[f].table, d = pb.input.tables[t].dim;
    for (int k = 0; k < d; ++k) pb.tables_f[t][(pb.input.tables[t].rows - 1) * d + k] = 9.0f;
  }
  pb.SyncFromFloat();
  ASSERT_TRUE(b->TrainStep(pb.input, pb.labels).ok());
  EXPECT_TRUE(std::ranges::equal(a->logits(), b->logits()));
  EXPECT_TRUE(std::ranges::equal(a->grads(), b->grads()));
}

// A batch of one sample and a batch whose histories are all empty.
TEST(CudaBackendTest, EdgeBatches) {
  DIN_REQUIRE_CUDA();
  ProblemOptions o;
  o.batch = 1;
  Problem one = MakeProblem(o);
  ExpectParity(one, "batch of one");
  Problem empty = MakeProblem(ProblemOptions{});
  for (FieldRows& f : empty.input.behavior_fields) {
    f.rows.clear();
    std::fill(f.offsets.begin(), f.offsets.end(), 0u);
  }
  ExpectParity(empty, "empty histories");
}

}  // namespace
}  // namespace din::model
