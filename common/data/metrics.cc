#include "common/data/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <glog/logging.h>

namespace din {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// AUC of the samples idx[0..n) (indices into labels/scores), reordering idx.
// Rank-sum (Mann-Whitney U) with average ranks for ties.
template <typename S>
double AucOf(uint32_t* idx, size_t n, std::span<const float> labels, std::span<const S> scores) {
  std::sort(idx, idx + n, [&](uint32_t a, uint32_t b) { return scores[a] < scores[b]; });
  double pos = 0, rank_sum = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    double pos_in_tie = 0;
    while (j < n && scores[idx[j]] == scores[idx[i]]) {
      pos_in_tie += labels[idx[j]] > 0.5f ? 1 : 0;
      ++j;
    }
    // Ranks i+1 .. j share the average (i + 1 + j) / 2.
    rank_sum += pos_in_tie * (static_cast<double>(i + 1 + j) / 2.0);
    pos += pos_in_tie;
    i = j;
  }
  const double neg = static_cast<double>(n) - pos;
  if (pos == 0 || neg == 0) return kNaN;
  return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg);
}

// Sorting needs a strict weak order: a NaN score (a diverged model) makes every metric NaN.
template <typename S>
bool AnyNaN(std::span<const S> scores) {
  return std::any_of(scores.begin(), scores.end(), [](S s) { return std::isnan(s); });
}

template <typename S>
double AucImpl(std::span<const float> labels, std::span<const S> scores) {
  CHECK_EQ(labels.size(), scores.size());
  if (AnyNaN(scores)) return kNaN;
  std::vector<uint32_t> idx(labels.size());
  std::iota(idx.begin(), idx.end(), 0u);
  return AucOf(idx.data(), idx.size(), labels, scores);
}

template <typename S>
double GaucImpl(std::span<const uint64_t> users, std::span<const float> labels,
                std::span<const S> scores, uint64_t* users_counted) {
  CHECK_EQ(labels.size(), scores.size());
  CHECK_EQ(labels.size(), users.size());
  if (users_counted) *users_counted = 0;
  if (AnyNaN(scores)) return kNaN;
  std::vector<uint32_t> idx(labels.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](uint32_t a, uint32_t b) { return users[a] < users[b]; });
  double weighted = 0, weight = 0;
  uint64_t counted = 0;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j < idx.size() && users[idx[j]] == users[idx[i]]) ++j;
    const double auc = AucOf(idx.data() + i, j - i, labels, scores);
    if (!std::isnan(auc)) {
      weighted += static_cast<double>(j - i) * auc;
      weight += static_cast<double>(j - i);
      ++counted;
    }
    i = j;
  }
  if (users_counted) *users_counted = counted;
  return weight > 0 ? weighted / weight : kNaN;
}

template <typename S>
double LogLossImpl(std::span<const float> labels, std::span<const S> probs) {
  CHECK_EQ(labels.size(), probs.size());
  if (labels.empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const double p = std::clamp(static_cast<double>(probs[i]), 1e-7, 1 - 1e-7);
    sum -= labels[i] > 0.5f ? std::log(p) : std::log1p(-p);
  }
  return sum / static_cast<double>(labels.size());
}

}  // namespace

double Auc(std::span<const float> labels, std::span<const float> scores) {
  return AucImpl(labels, scores);
}
double Auc(std::span<const float> labels, std::span<const double> scores) {
  return AucImpl(labels, scores);
}
double Gauc(std::span<const uint64_t> users, std::span<const float> labels,
            std::span<const float> scores, uint64_t* users_counted) {
  return GaucImpl(users, labels, scores, users_counted);
}
double Gauc(std::span<const uint64_t> users, std::span<const float> labels,
            std::span<const double> scores, uint64_t* users_counted) {
  return GaucImpl(users, labels, scores, users_counted);
}
double LogLoss(std::span<const float> labels, std::span<const float> probs) {
  return LogLossImpl(labels, probs);
}
double LogLoss(std::span<const float> labels, std::span<const double> probs) {
  return LogLossImpl(labels, probs);
}

void EvalAccumulator::Merge(const EvalAccumulator& other) {
  users_.insert(users_.end(), other.users_.begin(), other.users_.end());
  labels_.insert(labels_.end(), other.labels_.begin(), other.labels_.end());
  probs_.insert(probs_.end(), other.probs_.begin(), other.probs_.end());
}

void EvalAccumulator::Clear() {
  users_.clear();
  labels_.clear();
  probs_.clear();
}

EvalMetrics EvalAccumulator::Compute() const {
  EvalMetrics m;
  m.samples = labels_.size();
  for (float y : labels_) m.positives += y > 0.5f ? 1 : 0;
  m.auc = Auc(labels_, std::span<const float>(probs_));
  m.gauc = Gauc(users_, labels_, std::span<const float>(probs_), &m.gauc_users);
  m.logloss = LogLoss(labels_, std::span<const float>(probs_));
  return m;
}

}  // namespace din
