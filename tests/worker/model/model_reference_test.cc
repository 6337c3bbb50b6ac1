// The backends against an independent forward pass (din_reference.h): two samples whose
// embeddings and dense weights are written out here, their logits computed by hand in
// double precision, in training mode (Dice on batch statistics) and in evaluation
// (Dice on running statistics), for attention, SUM and MEAN pooling. The finite-
// difference checks only prove that a backend's forward and backward agree; these
// prove that the forward is DIN's.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/model_config.pb.h"
#include "tests/worker/model/din_reference.h"
#include "worker/model/backend.h"

namespace din::model {
namespace {

namespace ref = test::reference;

// Embedding tables, written out: row r of table t is kTables[t][r].
const std::vector<std::vector<std::vector<double>>> kTables = {
    // 0: item id (dim 2)
    {{0.5, -0.25}, {-0.75, 0.125}, {0.3, 0.9}, {-0.4, -0.6}, {0.8, 0.2}},
    // 1: category (dim 1)
    {{0.7}, {-0.35}, {0.15}},
    // 2: user profile (dim 2, multi-valued)
    {{0.2, -0.1}, {0.6, 0.45}, {-0.55, 0.05}},
    // 3: shop, a candidate field outside the item (dim 1)
    {{-0.2}, {0.65}, {0.4}},
    // 4: context (dim 1, multi-valued)
    {{0.33}, {-0.12}},
};

// Row indices per sample.
struct SampleRows {
  std::vector<uint32_t> user;
  uint32_t item, cate, shop;
  std::vector<uint32_t> hist_items, hist_cates, hist_shops;  // oldest first
  std::vector<uint32_t> context;
  float label;
};

// Sample 0 has three behaviours, one more than max_history keeps; sample 1 has one and no
// user-profile value.
const std::vector<SampleRows> kSamples = {
    {{0, 2}, 1, 0, 2, {2, 0, 4}, {1, 2, 0}, {0, 1, 2}, {1}, 1.0f},
    {{}, 3, 2, 0, {1}, {1}, {2}, {0, 1}, 0.0f},
};
constexpr int kMaxHistory = 2;

// A dense weight, fixed by its tensor's name and position (any values would do; these
// are spread over [-0.9, 0.9] with no two equal).
double WeightValue(const std::string& tensor, int i) {
  double seed = 0;
  for (char c : tensor) seed = seed * 1.37 + static_cast<unsigned char>(c) * 0.01;
  return 0.9 * std::sin(1.71 * i + seed);
}

ref::Layer MakeLayer(const std::string& name, int in, int out, bool dice) {
  ref::Layer l;
  l.in = in;
  l.out = out;
  for (int i = 0; i < in * out; ++i) l.w.push_back(WeightValue(name + ".w", i));
  for (int k = 0; k < out; ++k) l.b.push_back(0.3 * WeightValue(name + ".b", k));
  if (dice)
    for (int k = 0; k < out; ++k) {
      l.alpha.push_back(0.4 * WeightValue(name + ".alpha", k));
      l.running_mean.push_back(0.2 * WeightValue(name + ".mean", k));
      l.running_var.push_back(0.5 + 0.4 * std::abs(WeightValue(name + ".var", k)));
    }
  return l;
}

// Attention 12 → 3 → 1, top 13 → 4 → 2 → 1.
ref::Weights MakeWeights(bool attention) {
  ref::Weights w;
  if (attention) {
    w.attention.push_back(MakeLayer("att.0", 12, 3, true));
    w.attention.push_back(MakeLayer("att.1", 3, 1, false));
  }
  w.top.push_back(MakeLayer("top.0", 13, 4, true));
  w.top.push_back(MakeLayer("top.1", 4, 2, true));
  w.top.push_back(MakeLayer("top.2", 2, 1, false));
  return w;
}

std::vector<ref::Sample> ReferenceSamples() {
  std::vector<ref::Sample> out;
  for (const SampleRows& r : kSamples) {
    ref::Sample s;
    ref::Bag user{2, {}}, context{1, {}};
    for (uint32_t u : r.user) user.rows.push_back(kTables[2][u]);
    for (uint32_t c : r.context) context.rows.push_back(kTables[4][c]);
    s.user = {user};
    s.context = {context};
    s.candidate_item = {kTables[0][r.item][0], kTables[0][r.item][1], kTables[1][r.cate][0]};
    for (size_t j = 0; j < r.hist_items.size(); ++j)
      s.history.push_back({kTables[0][r.hist_items[j]][0], kTables[0][r.hist_items[j]][1],
                           kTables[1][r.hist_cates[j]][0]});
    s.other_candidate = {kTables[3][r.shop]};
    out.push_back(s);
  }
  return out;
}

// The same batch as the backends read it.
struct BackendBatch {
  std::vector<std::vector<float>> tables;
  ModelInput input;
  std::vector<float> labels;
};

BackendBatch MakeBackendBatch() {
  BackendBatch bb;
  for (const auto& t : kTables) {
    std::vector<float> flat;
    for (const auto& row : t)
      for (double v : row) flat.push_back(static_cast<float>(v));
    bb.tables.push_back(flat);
  }
  ModelInput& in = bb.input;
  in.batch_size = kSamples.size();
  for (size_t t = 0; t < kTables.size(); ++t)
    in.tables.push_back(TableRows{bb.tables[t].data(), static_cast<uint32_t>(kTables[t].size()),
                                  static_cast<int>(kTables[t][0].size())});
  auto field = [](int table) {
    FieldRows f;
    f.table = table;
    return f;
  };
  FieldRows user = field(2), item = field(0), cate = field(1), shop = field(3), hi = field(0),
            hc = field(1), hs = field(3), context = field(4);
  auto add = [](FieldRows* f, const std::vector<uint32_t>& rows) {
    f->rows.insert(f->rows.end(), rows.begin(), rows.end());
    f->offsets.push_back(static_cast<uint32_t>(f->rows.size()));
  };
  for (const SampleRows& r : kSamples) {
    add(&user, r.user);
    add(&item, {r.item});
    add(&cate, {r.cate});
    add(&shop, {r.shop});
    add(&hi, r.hist_items);
    add(&hc, r.hist_cates);
    add(&hs, r.hist_shops);
    add(&context, r.context);
    bb.labels.push_back(r.label);
  }
  in.user_fields = {user};
  in.candidate_fields = {item, cate, shop};
  in.behavior_fields = {hi, hc, hs};
  in.context_fields = {context};
  return bb;
}

config::ModelConfig MakeConfig(config::ModelConfig::Pooling pooling) {
  config::ModelConfig c;
  c.set_pooling(pooling);
  c.add_attention_hidden(3);
  c.add_top_hidden(4);
  c.add_top_hidden(2);
  c.add_item_fields(0);
  c.add_item_fields(1);
  c.set_max_history(kMaxHistory);
  return c;
}

// Copies the reference's weights and running statistics into the backend's buffers
// (by tensor name; the shapes must agree) and checks that every parameter was written.
void LoadWeights(const ref::Weights& w, ModelBackend* backend) {
  const ModelLayout& lay = backend->layout();
  size_t written = 0;
  auto load = [&](const std::string& prefix, const std::vector<ref::Layer>& layers,
                  const std::vector<LayerSpec>& specs) {
    ASSERT_EQ(layers.size(), specs.size()) << prefix;
    for (size_t i = 0; i < layers.size(); ++i) {
      const ref::Layer& l = layers[i];
      const std::string name = prefix + "." + std::to_string(i);
      auto put = [&](const std::string& tensor, const std::vector<double>& values) {
        const ParamTensor* t = lay.FindTensor(tensor);
        ASSERT_NE(t, nullptr) << tensor;
        ASSERT_EQ(static_cast<size_t>(t->rows) * t->cols, values.size()) << tensor;
        for (size_t e = 0; e < values.size(); ++e)
          backend->params()[t->offset + e] = static_cast<float>(values[e]);
        written += values.size();
      };
      const ParamTensor* wt = lay.FindTensor(name + ".w");
      ASSERT_NE(wt, nullptr) << name;
      ASSERT_EQ(wt->rows, l.in) << name;
      ASSERT_EQ(wt->cols, l.out) << name;
      put(name + ".w", l.w);
      put(name + ".b", l.b);
      if (l.dice()) {
        put(name + ".alpha", l.alpha);
        for (int k = 0; k < l.out; ++k) {
          backend->running_stats()[specs[i].running + k] = static_cast<float>(l.running_mean[k]);
          backend->running_stats()[specs[i].running + l.out + k] =
              static_cast<float>(l.running_var[k]);
        }
      }
    }
  };
  load("att", w.attention, lay.attention());
  load("top", w.top, lay.top());
  EXPECT_EQ(written, lay.num_params());
}

// Float backend against the double reference: |a − r| ≤ 2e-5·max(1, |r|).
void ExpectLogitsMatch(std::span<const float> got, const std::vector<double>& want,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t b = 0; b < want.size(); ++b)
    EXPECT_NEAR(got[b], want[b], 2e-5 * std::max(1.0, std::abs(want[b])))
        << what << ", sample " << b;
}

void CheckBackend(const std::string& kind, config::ModelConfig::Pooling pooling) {
  const bool attention = pooling == config::ModelConfig::ATTENTION;
  const ref::Pool pool = attention                             ? ref::Pool::kAttention
                         : pooling == config::ModelConfig::SUM ? ref::Pool::kSum
                                                               : ref::Pool::kMean;
  const config::ModelConfig config = MakeConfig(pooling);
  const FieldDims dims{{2}, {2, 1, 1}, {1}};
  auto backend = CreateBackend(kind, config, dims);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  const ref::Weights weights = MakeWeights(attention);
  LoadWeights(weights, backend->get());
  const std::vector<ref::Sample> samples = ReferenceSamples();
  BackendBatch bb = MakeBackendBatch();
  const std::string what = kind + " " + config::ModelConfig::Pooling_Name(pooling);

  // Evaluation: Dice on the running statistics written above.
  ref::Options eval{pool, kMaxHistory, /*train=*/false};
  const std::vector<double> want_eval = ref::Logits(samples, weights, eval);
  std::vector<float> got_eval(samples.size());
  ASSERT_TRUE((*backend)->Predict(bb.input, got_eval).ok());
  ExpectLogitsMatch(got_eval, want_eval, what + " evaluation");

  // Training: Dice on the batch statistics; the loss is the mean log loss.
  ref::Options train{pool, kMaxHistory, /*train=*/true};
  const std::vector<double> want_train = ref::Logits(samples, weights, train);
  auto loss = (*backend)->TrainStep(bb.input, bb.labels);
  ASSERT_TRUE(loss.ok()) << loss.status().ToString();
  ExpectLogitsMatch((*backend)->logits(), want_train, what + " training");
  const double want_loss =
      ref::MeanLogLoss(want_train, std::vector<double>(bb.labels.begin(), bb.labels.end()));
  EXPECT_NEAR(*loss, want_loss, 2e-5 * want_loss) << what;

  // The two modes and the pooling kinds give different logits here, so each comparison
  // above pins its own computation.
  for (size_t b = 0; b < samples.size(); ++b)
    EXPECT_GT(std::abs(want_eval[b] - want_train[b]), 1e-3) << "sample " << b;
}

TEST(DinReferenceTest, CpuAttention) { CheckBackend("cpu", config::ModelConfig::ATTENTION); }
TEST(DinReferenceTest, CpuSum) { CheckBackend("cpu", config::ModelConfig::SUM); }
TEST(DinReferenceTest, CpuMean) { CheckBackend("cpu", config::ModelConfig::MEAN); }

// The reference itself: attention, SUM and MEAN pooling give different logits on this
// batch (a reference blind to the pooling would pass the tests above for all three).
TEST(DinReferenceTest, PoolingKindsDiffer) {
  const auto samples = ReferenceSamples();
  const auto att = ref::Logits(samples, MakeWeights(true), {ref::Pool::kAttention, kMaxHistory});
  const auto sum = ref::Logits(samples, MakeWeights(false), {ref::Pool::kSum, kMaxHistory});
  const auto mean = ref::Logits(samples, MakeWeights(false), {ref::Pool::kMean, kMaxHistory});
  EXPECT_GT(std::abs(att[0] - sum[0]), 1e-3);
  EXPECT_GT(std::abs(sum[0] - mean[0]), 1e-3);
  EXPECT_GT(std::abs(att[0] - mean[0]), 1e-3);
}

// The CUDA backend, where a device exists (model_reference_emu_test: on the CUDA
// emulation).
TEST(DinReferenceTest, CudaAttention) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no usable CUDA device";
  CheckBackend("cuda", config::ModelConfig::ATTENTION);
  CheckBackend("cuda", config::ModelConfig::SUM);
  CheckBackend("cuda", config::ModelConfig::MEAN);
}

}  // namespace
}  // namespace din::model
