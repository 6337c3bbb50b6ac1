// The shape of a DIN network: its layers, where each dense parameter lives in the one
// flat parameter buffer, how the top MLP's input is laid out, and the seeded
// initialisation. Both backends use one ModelLayout, so their parameter buffers are
// interchangeable (the trainer all-reduces and checkpoints the same bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/model/din_input.h"
#include "worker/model/model_math.h"

namespace din::config {
class ModelConfig;
}

namespace din::model {

enum class Pooling { kAttention = 0, kSum = 1, kMean = 2 };

// kTrain: Dice normalises with the batch statistics (and the gradient flows through
// them); kEval: with the running statistics.
enum class Mode { kTrain, kEval };

// Embedding width of every field, per group, in schema order. Behaviour fields have the
// widths of their candidate fields.
struct FieldDims {
  std::vector<int> user;
  std::vector<int> candidate;
  std::vector<int> context;
};

// One fully connected layer y = act(x·W + b), x [n x in], W [in x out] row-major.
// Offsets index the flat parameter buffer (weight, bias, alpha) and the flat running-
// statistics buffer (Dice: mean at `running`, variance at `running + out`).
struct LayerSpec {
  int in = 0;
  int out = 0;
  math::Act act = math::Act::kNone;
  size_t weight = 0;
  size_t bias = 0;
  size_t alpha = 0;    // PReLU and Dice only
  size_t running = 0;  // Dice only
};

// A sum-pooled field's columns in the top MLP input.
struct TopSegment {
  enum class Group { kUser, kCandidate, kContext };
  Group group;
  int field;  // index within its group
  int col;    // first column in the top input
  int dim;
};

// A named slice of the parameter buffer ("att.0.w", "top.2.b", "top.1.alpha"...).
struct ParamTensor {
  std::string name;
  size_t offset;
  int rows;
  int cols;
};

class ModelLayout {
 public:
  static Result<ModelLayout> Create(const config::ModelConfig& config, const FieldDims& dims);

  Pooling pooling() const { return pooling_; }
  math::Act activation() const { return activation_; }
  bool softmax() const { return softmax_; }
  int max_history() const { return max_history_; }
  float dice_momentum() const { return momentum_; }
  float dice_epsilon() const { return epsilon_; }
  uint64_t seed() const { return seed_; }
  const FieldDims& field_dims() const { return dims_; }

  // Candidate fields forming the item (v_a and e_j), their first column in the item
  // vector, and the item width D.
  const std::vector<int>& item_fields() const { return item_fields_; }
  const std::vector<int>& item_cols() const { return item_cols_; }
  int item_dim() const { return item_dim_; }

  // Activation unit (empty unless pooling is ATTENTION): input 4·D, output 1.
  const std::vector<LayerSpec>& attention() const { return attention_; }
  // Top MLP: input top_in(), output 1 logit. Input columns: user fields, then u at
  // u_col(), v_a at u_col() + D, u ⊙ v_a at u_col() + 2D, then the candidate fields not
  // in the item, then context fields.
  const std::vector<LayerSpec>& top() const { return top_; }
  int top_in() const { return top_in_; }
  int u_col() const { return u_col_; }
  const std::vector<TopSegment>& segments() const { return segments_; }

  size_t num_params() const { return num_params_; }
  size_t num_running() const { return num_running_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  // The tensor named `name`, or nullptr.
  const ParamTensor* FindTensor(std::string_view name) const;

  // Seeded initialisation, bit-identical in every process for the same seed: Glorot-
  // uniform weights, zero biases, α = 0 for Dice and 0.25 for PReLU, running mean 0 and
  // running variance 1.
  void Initialize(std::span<float> params, std::span<float> running) const;

  // Checks that the input's fields and table widths match this layout.
  Status CheckInput(const ModelInput& input) const;

 private:
  ModelLayout() = default;
  std::vector<LayerSpec> BuildMlp(const std::string& prefix, int in,
                                  const std::vector<int>& hidden);

  Pooling pooling_ = Pooling::kAttention;
  math::Act activation_ = math::Act::kDice;
  bool softmax_ = false;
  int max_history_ = 50;
  float momentum_ = 0.99f;
  float epsilon_ = 1e-8f;
  uint64_t seed_ = 0;
  FieldDims dims_;
  std::vector<int> item_fields_;
  std::vector<int> item_cols_;
  int item_dim_ = 0;
  std::vector<LayerSpec> attention_;
  std::vector<LayerSpec> top_;
  int top_in_ = 0;
  int u_col_ = 0;
  std::vector<TopSegment> segments_;
  size_t num_params_ = 0;
  size_t num_running_ = 0;
  std::vector<ParamTensor> tensors_;
};

// Host-side indexing of one batch's behaviour lists, shared by the backends: the kept
// positions (the newest max_history of each sample) packed sample after sample. Only
// kept positions are ever materialised, so padding never enters the computation.
// Reuses its vectors between batches.
struct BatchPlan {
  int batch = 0;
  int positions = 0;                             // N, kept positions in the batch
  std::vector<int32_t> hist_offsets;             // [batch + 1] into the packed positions
  std::vector<int32_t> pos_sample;               // [N] sample of each position
  std::vector<std::vector<uint32_t>> hist_rows;  // per item field, [N] table row
  std::vector<std::vector<uint32_t>> cand_rows;  // per item field, [batch] table row

  Status Build(const ModelInput& input, const ModelLayout& layout);
};

}  // namespace din::model
