#include "worker/model/model_layout.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/proto/model_config.pb.h"
#include "common/rng.h"

namespace din::model {

std::vector<LayerSpec> ModelLayout::BuildMlp(const std::string& prefix, int in,
                                             const std::vector<int>& hidden) {
  std::vector<LayerSpec> layers;
  std::vector<int> outs = hidden;
  outs.push_back(1);
  for (size_t i = 0; i < outs.size(); ++i) {
    LayerSpec l;
    l.in = in;
    l.out = outs[i];
    l.act = i + 1 < outs.size() ? activation_ : math::Act::kNone;
    const std::string name = prefix + "." + std::to_string(i);
    l.weight = num_params_;
    tensors_.push_back({name + ".w", num_params_, l.in, l.out});
    num_params_ += static_cast<size_t>(l.in) * l.out;
    l.bias = num_params_;
    tensors_.push_back({name + ".b", num_params_, 1, l.out});
    num_params_ += l.out;
    if (l.act == math::Act::kDice || l.act == math::Act::kPRelu) {
      l.alpha = num_params_;
      tensors_.push_back({name + ".alpha", num_params_, 1, l.out});
      num_params_ += l.out;
    }
    if (l.act == math::Act::kDice) {
      l.running = num_running_;
      num_running_ += 2 * static_cast<size_t>(l.out);
    }
    layers.push_back(l);
    in = l.out;
  }
  return layers;
}

Result<ModelLayout> ModelLayout::Create(const config::ModelConfig& config, const FieldDims& dims) {
  ModelLayout m;
  m.dims_ = dims;
  m.pooling_ = static_cast<Pooling>(config.pooling());
  switch (config.activation()) {
    case config::ModelConfig::DICE:
      m.activation_ = math::Act::kDice;
      break;
    case config::ModelConfig::PRELU:
      m.activation_ = math::Act::kPRelu;
      break;
    case config::ModelConfig::RELU:
      m.activation_ = math::Act::kRelu;
      break;
    case config::ModelConfig::SIGMOID:
      m.activation_ = math::Act::kSigmoid;
      break;
  }
  m.softmax_ = config.attention_softmax();
  m.max_history_ = config.max_history();
  m.momentum_ = config.dice_momentum();
  m.epsilon_ = config.dice_epsilon();
  m.seed_ = config.dense_seed();
  if (m.max_history_ < 1) return Status::InvalidArgument("model.max_history must be >= 1");
  if (!(m.momentum_ >= 0.0f && m.momentum_ <= 1.0f))
    return Status::InvalidArgument("model.dice_momentum must be in [0, 1]");
  if (!(m.epsilon_ > 0.0f)) return Status::InvalidArgument("model.dice_epsilon must be > 0");
  for (const auto* group : {&dims.user, &dims.candidate, &dims.context})
    for (int d : *group)
      if (d <= 0) return Status::InvalidArgument("every field needs a positive dim");
  if (dims.candidate.empty()) return Status::InvalidArgument("the model needs a candidate field");

  std::vector<bool> in_item(dims.candidate.size(), config.item_fields_size() == 0);
  for (int f : config.item_fields()) {
    if (f < 0 || f >= static_cast<int>(dims.candidate.size()))
      return Status::InvalidArgument("model.item_fields: " + std::to_string(f) +
                                     " is not a candidate field");
    if (in_item[f]) return Status::InvalidArgument("model.item_fields lists a field twice");
    in_item[f] = true;
  }
  for (size_t f = 0; f < dims.candidate.size(); ++f)
    if (in_item[f]) {
      m.item_fields_.push_back(static_cast<int>(f));
      m.item_cols_.push_back(m.item_dim_);
      m.item_dim_ += dims.candidate[f];
    }

  std::vector<int> att_hidden(config.attention_hidden().begin(), config.attention_hidden().end());
  std::vector<int> top_hidden(config.top_hidden().begin(), config.top_hidden().end());
  if (att_hidden.empty()) att_hidden = {80, 40};
  if (top_hidden.empty()) top_hidden = {200, 80};
  for (int h : att_hidden)
    if (h <= 0) return Status::InvalidArgument("model.attention_hidden sizes must be > 0");
  for (int h : top_hidden)
    if (h <= 0) return Status::InvalidArgument("model.top_hidden sizes must be > 0");

  // Top input columns.
  int col = 0;
  using G = TopSegment::Group;
  for (size_t f = 0; f < dims.user.size(); ++f) {
    m.segments_.push_back({G::kUser, static_cast<int>(f), col, dims.user[f]});
    col += dims.user[f];
  }
  m.u_col_ = col;
  col += 3 * m.item_dim_;
  for (size_t f = 0; f < dims.candidate.size(); ++f)
    if (!in_item[f]) {
      m.segments_.push_back({G::kCandidate, static_cast<int>(f), col, dims.candidate[f]});
      col += dims.candidate[f];
    }
  for (size_t f = 0; f < dims.context.size(); ++f) {
    m.segments_.push_back({G::kContext, static_cast<int>(f), col, dims.context[f]});
    col += dims.context[f];
  }
  m.top_in_ = col;

  if (m.pooling_ == Pooling::kAttention)
    m.attention_ = m.BuildMlp("att", 4 * m.item_dim_, att_hidden);
  m.top_ = m.BuildMlp("top", m.top_in_, top_hidden);
  return m;
}

const ParamTensor* ModelLayout::FindTensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void ModelLayout::Initialize(std::span<float> params, std::span<float> running) const {
  CHECK_EQ(params.size(), num_params_);
  CHECK_EQ(running.size(), num_running_);
  size_t layer_index = 0;
  for (const auto* mlp : {&attention_, &top_}) {
    for (const LayerSpec& l : *mlp) {
      // One stream per layer, so a layer's weights do not depend on the other layers.
      SplitMix64 rng(seed_ ^ (0x5851f42d4c957f2dULL * (++layer_index)));
      const float limit = std::sqrt(6.0f / static_cast<float>(l.in + l.out));
      for (size_t i = 0; i < static_cast<size_t>(l.in) * l.out; ++i)
        params[l.weight + i] = limit * rng.Symmetric();
      for (int j = 0; j < l.out; ++j) params[l.bias + j] = 0.0f;
      if (l.act == math::Act::kDice || l.act == math::Act::kPRelu)
        for (int j = 0; j < l.out; ++j)
          params[l.alpha + j] = l.act == math::Act::kPRelu ? 0.25f : 0.0f;
      if (l.act == math::Act::kDice)
        for (int j = 0; j < l.out; ++j) {
          running[l.running + j] = 0.0f;
          running[l.running + l.out + j] = 1.0f;
        }
    }
  }
}

Status ModelLayout::CheckInput(const ModelInput& input) const {
  DIN_RETURN_IF_ERROR(input.Validate());
  auto check = [&](const std::vector<FieldRows>& fields, const std::vector<int>& dims,
                   const char* group) -> Status {
    if (fields.size() != dims.size())
      return Status::InvalidArgument(std::string("input has ") + std::to_string(fields.size()) +
                                     " " + group + " fields, the model " +
                                     std::to_string(dims.size()));
    for (size_t f = 0; f < fields.size(); ++f)
      if (input.tables[fields[f].table].dim != dims[f])
        return Status::InvalidArgument(std::string(group) + " field " + std::to_string(f) +
                                       ": table dim " +
                                       std::to_string(input.tables[fields[f].table].dim) +
                                       ", model expects " + std::to_string(dims[f]));
    return Status::Ok();
  };
  DIN_RETURN_IF_ERROR(check(input.user_fields, dims_.user, "user"));
  DIN_RETURN_IF_ERROR(check(input.candidate_fields, dims_.candidate, "candidate"));
  DIN_RETURN_IF_ERROR(check(input.context_fields, dims_.context, "context"));
  return Status::Ok();
}

Status BatchPlan::Build(const ModelInput& input, const ModelLayout& layout) {
  DIN_RETURN_IF_ERROR(layout.CheckInput(input));
  batch = static_cast<int>(input.batch_size);
  const int max_history = layout.max_history();
  const FieldRows& lists = input.behavior_fields[0];
  hist_offsets.resize(batch + 1);
  hist_offsets[0] = 0;
  for (int b = 0; b < batch; ++b) {
    const int len = std::min<int>(lists.length(b), max_history);
    hist_offsets[b + 1] = hist_offsets[b] + len;
  }
  positions = hist_offsets[batch];
  pos_sample.resize(positions);
  const size_t fields = layout.item_fields().size();
  hist_rows.resize(fields);
  cand_rows.resize(fields);
  for (size_t i = 0; i < fields; ++i) {
    const int f = layout.item_fields()[i];
    const FieldRows& hist = input.behavior_fields[f];
    hist_rows[i].resize(positions);
    cand_rows[i].assign(input.candidate_fields[f].rows.begin(),
                        input.candidate_fields[f].rows.end());
    for (int b = 0; b < batch; ++b) {
      const int len = hist_offsets[b + 1] - hist_offsets[b];
      const uint32_t first = hist.offsets[b + 1] - len;  // newest `len` behaviours
      for (int j = 0; j < len; ++j) hist_rows[i][hist_offsets[b] + j] = hist.rows[first + j];
    }
  }
  for (int b = 0; b < batch; ++b)
    for (int n = hist_offsets[b]; n < hist_offsets[b + 1]; ++n) pos_sample[n] = b;
  return Status::Ok();
}

}  // namespace din::model
