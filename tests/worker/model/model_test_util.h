// Small random DIN problems and a double-precision reference model for the model tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/model_config.pb.h"
#include "worker/model/cpu_engine.h"
#include "worker/model/din_input.h"
#include "worker/model/model_layout.h"

namespace din::model::test {

struct ProblemOptions {
  int batch = 6;
  int max_history = 4;
  int longest_list = 6;  // lists longer than max_history exercise the truncation
  int item_rows = 8;     // few rows, so IDs repeat within and across samples
  int cate_rows = 4;
  bool user_field = true;       // multi-valued user field (table 2)
  bool context_field = true;    // context field sharing table 2 with the user field
  bool extra_candidate = true;  // a candidate field outside the item (table 3)
  uint64_t seed = 1;
};

// Tables: 0 item (dim 3), 1 category (dim 3), 2 user/context (dim 2), 3 extra (dim 2).
// Sample 0's candidate item (row 0) also occurs twice in its own history and in other
// samples' histories, so per-unique-row gradients sum over fields and occurrences.
struct Problem {
  config::ModelConfig config;
  FieldDims dims;
  ModelInput input;
  std::vector<std::vector<float>> tables_f;
  std::vector<std::vector<double>> tables_d;
  std::vector<float> labels;

  // Points input.tables at tables_f after tables_f was edited, and refreshes tables_d.
  void SyncFromFloat() {
    for (size_t t = 0; t < tables_f.size(); ++t) {
      input.tables[t].data = tables_f[t].data();
      tables_d[t].assign(tables_f[t].begin(), tables_f[t].end());
    }
  }
  std::vector<const double*> DoublePtrs() const {
    std::vector<const double*> p;
    for (const auto& t : tables_d) p.push_back(t.data());
    return p;
  }
};

inline Problem MakeProblem(const ProblemOptions& o) {
  Problem pb;
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<float> val(-1.0f, 1.0f);
  auto pick = [&](int n) { return static_cast<uint32_t>(rng() % n); };
  const int dims[4] = {3, 3, 2, 2};
  const int rows[4] = {o.item_rows, o.cate_rows, 5, 4};
  pb.config.set_max_history(o.max_history);
  pb.config.add_attention_hidden(5);
  pb.config.add_attention_hidden(4);
  pb.config.add_top_hidden(7);
  pb.config.add_top_hidden(5);
  pb.dims.candidate = {3, 3};
  if (o.extra_candidate) {
    pb.dims.candidate.push_back(2);
    pb.config.add_item_fields(0);
    pb.config.add_item_fields(1);
  }
  if (o.user_field) pb.dims.user = {2};
  if (o.context_field) pb.dims.context = {2};

  ModelInput& in = pb.input;
  in.batch_size = o.batch;
  pb.tables_f.resize(4);
  pb.tables_d.resize(4);
  in.tables.resize(4);
  for (int t = 0; t < 4; ++t) {
    pb.tables_f[t].resize(static_cast<size_t>(rows[t]) * dims[t]);
    for (float& v : pb.tables_f[t]) v = val(rng);
    in.tables[t] = TableRows{nullptr, static_cast<uint32_t>(rows[t]), dims[t]};
  }
  auto single = [&](int table, std::function<uint32_t(int)> row_of) {
    FieldRows f;
    f.table = table;
    for (int b = 0; b < o.batch; ++b) {
      f.rows.push_back(row_of(b));
      f.offsets.push_back(b + 1);
    }
    return f;
  };
  in.candidate_fields.push_back(single(0, [&](int b) { return b == 0 ? 0u : pick(o.item_rows); }));
  in.candidate_fields.push_back(single(1, [&](int) { return pick(o.cate_rows); }));
  if (o.extra_candidate) in.candidate_fields.push_back(single(3, [&](int) { return pick(4); }));
  // Behaviour lists: same lengths for every behaviour field; sample 1 empty.
  FieldRows hi, hc, hx;
  hi.table = 0;
  hc.table = 1;
  hx.table = 3;
  for (int b = 0; b < o.batch; ++b) {
    const int len = b == 1   ? 0
                    : b == 0 ? o.longest_list
                             : 1 + static_cast<int>(pick(o.longest_list));
    for (int j = 0; j < len; ++j) {
      // Sample 0 holds its candidate item (row 0) at its two newest positions.
      hi.rows.push_back(b == 0 && j >= len - 2 ? 0u : pick(o.item_rows));
      hc.rows.push_back(pick(o.cate_rows));
      hx.rows.push_back(pick(4));
    }
    hi.offsets.push_back(static_cast<uint32_t>(hi.rows.size()));
    hc.offsets.push_back(static_cast<uint32_t>(hc.rows.size()));
    hx.offsets.push_back(static_cast<uint32_t>(hx.rows.size()));
  }
  in.behavior_fields = {hi, hc};
  if (o.extra_candidate) in.behavior_fields.push_back(hx);
  auto multi = [&](int table) {
    FieldRows f;
    f.table = table;
    for (int b = 0; b < o.batch; ++b) {
      const int n = static_cast<int>(pick(3));  // 0, 1 or 2 values
      for (int j = 0; j < n; ++j) f.rows.push_back(pick(5));
      f.offsets.push_back(static_cast<uint32_t>(f.rows.size()));
    }
    return f;
  };
  if (o.user_field) in.user_fields.push_back(multi(2));
  if (o.context_field) in.context_fields.push_back(multi(2));
  for (int b = 0; b < o.batch; ++b) pb.labels.push_back(static_cast<float>(pick(2)));
  pb.SyncFromFloat();
  return pb;
}

// The double-precision reference: CpuEngine<double> with its own parameter copy.
struct ReferenceModel {
  explicit ReferenceModel(const Problem& pb)
      : layout(ModelLayout::Create(pb.config, pb.dims).value()), engine(&layout) {
    std::vector<float> pf(layout.num_params()), rf(layout.num_running());
    layout.Initialize(pf, rf);
    params.assign(pf.begin(), pf.end());
    running.assign(rf.begin(), rf.end());
    // Non-zero biases and α make every gradient path visible.
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> val(-0.3, 0.3);
    for (const ParamTensor& t : layout.tensors())
      if (t.name.ends_with(".b") || t.name.ends_with(".alpha"))
        for (int i = 0; i < t.rows * t.cols; ++i) params[t.offset + i] = val(rng);
  }

  // Training-mode loss (batch statistics), running statistics left alone.
  double Loss(const Problem& pb) {
    CHECK(plan.Build(pb.input, layout).ok());
    const auto tables = pb.DoublePtrs();
    return engine.Forward(plan, pb.input, tables, params.data(), running.data(), Mode::kTrain,
                          false, pb.labels);
  }

  // Analytic gradients of Loss.
  void Gradients(const Problem& pb, std::vector<double>* grads,
                 std::vector<std::vector<double>>* table_grads) {
    Loss(pb);
    grads->assign(layout.num_params(), 0.0);
    table_grads->resize(pb.tables_d.size());
    std::vector<double*> ptrs;
    for (size_t t = 0; t < pb.tables_d.size(); ++t) {
      (*table_grads)[t].assign(pb.tables_d[t].size(), 0.0);
      ptrs.push_back((*table_grads)[t].data());
    }
    engine.Backward(plan, pb.input, params.data(), pb.labels, grads->data(), ptrs);
  }

  ModelLayout layout;
  CpuEngine<double> engine;
  BatchPlan plan;
  std::vector<double> params, running;
};

// Central finite difference of f at x[i].
inline double CentralDiff(std::vector<double>& x, size_t i, double h,
                          const std::function<double()>& f) {
  const double old = x[i];
  x[i] = old + h;
  const double fp = f();
  x[i] = old - h;
  const double fm = f();
  x[i] = old;
  return (fp - fm) / (2 * h);
}

// |analytic − numeric| ≤ atol + rtol·|numeric| for every entry.
inline void ExpectGradClose(std::span<const double> analytic, std::span<const double> numeric,
                            double atol, double rtol, const std::string& what) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < analytic.size(); ++i)
    if (!(std::abs(analytic[i] - numeric[i]) <= atol + rtol * std::abs(numeric[i])) && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << analytic[i] << " numeric "
                    << numeric[i];
  EXPECT_EQ(bad, 0) << what;
}

// max |a − b| ≤ tol · max(max |b|, floor): a relative comparison of whole vectors that
// does not blow up on entries that happen to be near zero.
template <typename A, typename B>
void ExpectVectorsNear(std::span<const A> a, std::span<const B> b, double tol,
                       const std::string& what, double floor = 1e-6) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = floor, worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::abs(double(b[i])));
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i]));
    if (!(d <= worst)) {
      worst = d;
      worst_i = i;
    }
  }
  EXPECT_LE(worst, tol * scale) << what << ": worst at " << worst_i << " (" << a[worst_i] << " vs "
                                << b[worst_i] << ")";
}

// ExpectVectorsNear per parameter tensor of `layout` (a params or grads buffer): each
// tensor against its own scale, so an error in a tensor of small values (a bias, an α)
// is not hidden by the largest values elsewhere in the buffer.
template <typename A, typename B>
void ExpectTensorsNear(std::span<const A> a, std::span<const B> b, const ModelLayout& layout,
                       double tol, const std::string& what, double floor = 1e-6) {
  ASSERT_EQ(a.size(), layout.num_params()) << what;
  ASSERT_EQ(b.size(), layout.num_params()) << what;
  for (const ParamTensor& t : layout.tensors()) {
    const size_t n = static_cast<size_t>(t.rows) * t.cols;
    ExpectVectorsNear<A, B>(a.subspan(t.offset, n), b.subspan(t.offset, n), tol,
                            what + " " + t.name, floor);
  }
}

// ExpectVectorsNear per Dice running statistic of `layout`: each layer's means and its
// variances separately.
template <typename A, typename B>
void ExpectRunningNear(std::span<const A> a, std::span<const B> b, const ModelLayout& layout,
                       double tol, const std::string& what, double floor = 1e-6) {
  ASSERT_EQ(a.size(), layout.num_running()) << what;
  ASSERT_EQ(b.size(), layout.num_running()) << what;
  for (const auto* mlp : {&layout.attention(), &layout.top()})
    for (size_t i = 0; i < mlp->size(); ++i) {
      const LayerSpec& l = (*mlp)[i];
      if (l.act != math::Act::kDice) continue;
      const std::string name = (mlp == &layout.attention() ? "att." : "top.") + std::to_string(i);
      for (int part = 0; part < 2; ++part)
        ExpectVectorsNear<A, B>(a.subspan(l.running + part * l.out, l.out),
                                b.subspan(l.running + part * l.out, l.out), tol,
                                what + " " + name + (part == 0 ? " mean" : " var"), floor);
    }
}

}  // namespace din::model::test
