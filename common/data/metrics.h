// Evaluation metrics (docs/design.md §11): AUC with ties counted 1/2, the paper's user-weighted
// GAUC, and logloss.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace din {

// Area under the ROC curve: the probability that a random positive scores above a
// random negative, ties counting 1/2. O(n log n). NaN when either class is absent.
// `labels` are 0 or 1 (anything > 0.5 counts as positive). A NaN score gives NaN.
double Auc(std::span<const float> labels, std::span<const float> scores);
double Auc(std::span<const float> labels, std::span<const double> scores);

// GAUC = sum_u n_u * AUC_u / sum_u n_u over the users with both a positive and a
// negative sample, n_u = the user's sample count. NaN when no user qualifies.
// `users_counted` (optional) receives the number of qualifying users.
double Gauc(std::span<const uint64_t> users, std::span<const float> labels,
            std::span<const float> scores, uint64_t* users_counted = nullptr);
double Gauc(std::span<const uint64_t> users, std::span<const float> labels,
            std::span<const double> scores, uint64_t* users_counted = nullptr);

// Mean binary cross-entropy of probabilities, clamped to [1e-7, 1 - 1e-7]. NaN when empty.
double LogLoss(std::span<const float> labels, std::span<const float> probs);
double LogLoss(std::span<const float> labels, std::span<const double> probs);

struct EvalMetrics {
  double auc = 0;
  double gauc = 0;
  double logloss = 0;
  uint64_t samples = 0;
  uint64_t positives = 0;
  uint64_t gauc_users = 0;  // users with both classes
};

// Collects (user, label, probability) triples, e.g. over all test batches, possibly
// from several workers (Merge), and computes the metrics at the end. Memory: 16 bytes
// per sample. Not thread safe.
class EvalAccumulator {
 public:
  void Add(uint64_t user, float label, float prob) {
    users_.push_back(user);
    labels_.push_back(label);
    probs_.push_back(prob);
  }
  void Merge(const EvalAccumulator& other);
  void Clear();
  size_t size() const { return labels_.size(); }
  EvalMetrics Compute() const;

  const std::vector<uint64_t>& users() const { return users_; }
  const std::vector<float>& labels() const { return labels_; }
  const std::vector<float>& probs() const { return probs_; }

 private:
  std::vector<uint64_t> users_;
  std::vector<float> labels_;
  std::vector<float> probs_;
};

}  // namespace din
