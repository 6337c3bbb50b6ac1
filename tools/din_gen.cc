// din_gen: a synthetic click log in din-tsv with a planted, target-aware interest
// structure, and the Bayes-optimal AUC / GAUC of its test split.
//
//   din_gen --out DIR [--rows 200000] [--test-rows 50000] [--users 10000]
//           [--items 100000] [--cates 200] [--max-history 50] [--seed 1]
//           [--zipf 1.1] [--write-probs] [--day 0] [--drift 0]
//
// Writes DIR/train.tsv, DIR/test.tsv, DIR/bayes.json and, with --write-probs,
// DIR/test_probs.txt (the true click probability of each test line, same order).
//
// The world (nothing in it is stored per item or per user: memory depends on --cates
// only, so --items and --users may be in the billions):
//  - Categories: item shares Zipf(0.8); category c holds the contiguous block of n_c
//    item slots [start_c, start_c + n_c) (n_c = its share of --items).
//  - Items: popularity Zipf(--zipf) over global ranks, the ranks spread over the
//    categories at random in proportion to their shares. Within category c the items
//    then follow the global ranks: local rank j has weight (j + q_c)^-s with
//    q_c = share_c (r_c + 1), r_c the global rank of the category's most popular item
//    (each of the first 2^16 ranks draws its category; a category none of them drew
//    gets 2^16 + Geometric(share_c)), and the category's share of all global popularity
//    is share_c^s sum_j (j + q_c)^-s. Draws within a category use rejection-inversion
//    (tools/zipf.h, O(1) memory). An item's ID is its slot scrambled by a bijection of
//    the 63-bit space (sparse, no collisions, fits in int64 too); its quality
//    q ~ N(0, 1) is a hash of the same (the slot and, with --day, its generation).
//  - Users: 2..5 interest categories with random weights, a hash of the user.
//  - A row: a user (uniform); a history of 0..max_history behaviours, each from one of
//    the user's interests (80%) or the global popularity (20%); a candidate from the
//    user's interests (50%) or the global popularity (50%).
//  - Click: p = sigmoid(-2 + 0.6 q_a + 3 (1 - exp(-m / 2)) + 0.5 [a in history]), m =
//    the number of behaviours in the candidate's category. The signal lives in how the
//    behaviours relate to the candidate: a model seeing only the candidate cannot
//    reach the ceiling, and a pooling that picks the relevant behaviours (attention)
//    separates it better than a plain sum over many unrelated interests.
//
// Days: `--day D --drift F` writes day D of a series whose item population turns over.
// Each item slot (a category's local rank) holds a sequence of items; slot k
// moves to its next item on the days where floor(D F + phase_k) grows (phase_k a hash
// of k), so a fraction F of the slots gets a new item each day: new items appear
// (taking over popular slots too) and the old ones stop appearing. A new item has a
// new ID and quality. Users and their interests stay the same; the rows of each day
// are a fresh sample, so the test split of day D + 1 is the next-day test for a model
// trained on days <= D. Day 0 is the same for every F, and is what din_gen writes
// without --day.
//
// Deterministic for a seed (each row has its own random stream). Memory depends on the
// categories alone, not on rows, items or users: train rows are written as generated,
// test rows user by user (per-user AUC on the fly, global AUC from a 2^20-bin histogram
// of p, exact up to pairs whose p differ by less than 2^-20).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/data/metrics.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/rng.h"
#include "common/status.h"
#include "common/tsv_writer.h"
#include "tools/zipf.h"

DEFINE_uint64(rows, 200000, "training rows");
DEFINE_uint64(test_rows, 50000, "test rows (spread evenly over the users)");
DEFINE_uint64(users, 10000, "users");
DEFINE_uint64(items, 100000, "items");
DEFINE_uint64(cates, 200, "categories");
DEFINE_uint32(max_history, 50, "longest behaviour list");
DEFINE_uint64(seed, 1, "random seed");
DEFINE_double(zipf, 1.1, "Zipf exponent of item popularity");
DEFINE_string(out, "", "output directory (created)");
DEFINE_bool(write_probs, false, "also write OUT/test_probs.txt");
DEFINE_uint32(day, 0, "day of a drifting series (0 = the first day)");
DEFINE_double(drift, 0, "fraction of the item population that turns over per day, 0..1");

namespace {

using din::Mix64;
using din::SplitMix64;
using din::Status;
using din::TsvWriter;

constexpr uint64_t kMask63 = (1ULL << 63) - 1;
constexpr uint64_t kHead = 1 << 16;  // global ranks whose category is drawn one by one

// A bijection of [0, 2^63): xor-shifts and odd multiplications, all invertible mod 2^63.
uint64_t Scramble63(uint64_t x, uint64_t key) {
  x = (x ^ key) & kMask63;
  x = ((x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ULL) & kMask63;
  x = ((x ^ (x >> 29)) * 0x94d049bb133111ebULL) & kMask63;
  return x ^ (x >> 32);
}

// Index drawn from a cumulative distribution (last entry 1).
uint32_t Draw(const std::vector<double>& cdf, double u) {
  return static_cast<uint32_t>(std::upper_bound(cdf.begin(), cdf.end() - 1, u) - cdf.begin());
}

std::vector<double> ZipfCdf(size_t n, double s) {
  std::vector<double> cdf(n);
  double acc = 0;
  for (size_t k = 0; k < n; ++k) cdf[k] = acc += std::pow(static_cast<double>(k + 1), -s);
  for (auto& c : cdf) c /= acc;
  cdf.back() = 1.0;
  return cdf;
}

// How many times item slot `k` has turned over by day `day` (--drift, --day).
uint64_t Generation(uint64_t seed, uint64_t k) {
  if (FLAGS_day == 0 || FLAGS_drift <= 0) return 0;
  const double phase = static_cast<double>(Mix64(Mix64(seed ^ 0x5eed) + k) >> 11) * 0x1p-53;
  return static_cast<uint64_t>(std::floor(FLAGS_day * FLAGS_drift + phase));
}

struct Category {
  uint64_t start = 0, n = 0;  // item slots [start, start + n)
  din::ZipfSampler local;     // local rank within the category
};

struct World {
  uint64_t seed, key;
  std::vector<Category> cates;
  std::vector<double> cate_share_cdf;  // Zipf(0.8): item shares and user interests
  std::vector<double> global_cdf;      // the category of a draw by global popularity
  uint32_t top_cate;                   // the category with the most global popularity
};

World BuildWorld() {
  World w;
  w.seed = FLAGS_seed;
  w.key = Mix64(w.seed ^ 0x17e3);
  const uint64_t items = FLAGS_items, cates = FLAGS_cates;
  w.cate_share_cdf = ZipfCdf(cates, 0.8);
  w.cates.resize(cates);
  std::vector<double> mass(cates, 0.0);
  const auto slot_bound = [&](uint64_t c) {  // start of category c's block
    if (c == 0) return uint64_t{0};
    if (c == cates) return items;
    return std::min(items, static_cast<uint64_t>(
                               std::llround(static_cast<double>(items) * w.cate_share_cdf[c - 1])));
  };
  // The global rank of each category's most popular item: the first kHead ranks get a
  // category each (by share), as the ranks of a table would; a category none of them
  // got starts at kHead + Geometric(share).
  const uint64_t head = std::min<uint64_t>(items, kHead);
  std::vector<double> first_rank(cates, -1.0);
  for (uint64_t k = 0; k < head; ++k) {
    const double u = static_cast<double>(Mix64(Mix64(w.seed ^ 0x4ead) + k) >> 11) * 0x1p-53;
    const uint32_t c = Draw(w.cate_share_cdf, u);
    if (first_rank[c] < 0) first_rank[c] = static_cast<double>(k);
  }
  for (uint64_t c = 0; c < cates; ++c) {
    Category& cat = w.cates[c];
    cat.start = slot_bound(c);
    cat.n = std::max(cat.start, slot_bound(c + 1)) - cat.start;
    if (cat.n == 0) continue;
    const double share = w.cate_share_cdf[c] - (c ? w.cate_share_cdf[c - 1] : 0.0);
    if (first_rank[c] < 0) {
      const double u = static_cast<double>(Mix64(Mix64(w.seed ^ 0xca7e) + c) >> 11) * 0x1p-53;
      first_rank[c] = static_cast<double>(head) +
                      (share >= 1 ? 0 : std::floor(std::log1p(-u) / std::log1p(-share)));
    }
    cat.local = din::ZipfSampler(cat.n, FLAGS_zipf, share * (first_rank[c] + 1));
    mass[c] = std::pow(share, FLAGS_zipf) * cat.local.Mass();
  }
  w.top_cate = static_cast<uint32_t>(std::max_element(mass.begin(), mass.end()) - mass.begin());
  double acc = 0;
  for (double m : mass) w.global_cdf.push_back(acc += m);
  for (auto& x : w.global_cdf) x /= acc;
  // 1 from the last category with items on, so that no draw lands past it.
  for (size_t c = w.cates.size(); c-- > 0;) {
    w.global_cdf[c] = 1.0;
    if (w.cates[c].n > 0) break;
  }
  return w;
}

// A user's interests: up to 5 categories and the cumulative weights of choosing them.
struct Interests {
  uint32_t n = 0;
  uint32_t cate[5];
  double cdf[5];
};

Interests UserInterests(const World& w, uint64_t user) {
  Interests in;
  SplitMix64 rng(Mix64(w.seed * 0x9e3779b97f4a7c15ULL + user) ^ 0x3c4d);
  const uint32_t n = 2 + static_cast<uint32_t>(rng.Next() % 4);
  for (int tries = 0; in.n < n && tries < 100; ++tries) {
    const uint32_t c = Draw(w.cate_share_cdf, rng.Uniform());
    if (w.cates[c].n > 0 && std::find(in.cate, in.cate + in.n, c) == in.cate + in.n)
      in.cate[in.n++] = c;
  }
  if (in.n == 0) in.cate[in.n++] = w.top_cate;
  double acc = 0;
  for (uint32_t i = 0; i < in.n; ++i) in.cdf[i] = acc += 0.2 + 0.8 * rng.Uniform();
  for (uint32_t i = 0; i < in.n; ++i) in.cdf[i] = i + 1 == in.n ? 1.0 : in.cdf[i] / acc;
  return in;
}

struct Item {
  uint64_t slot;
  uint32_t cate;  // 0-based
};

// The item in `slot` today (generation g's item is number slot + g * items): its ID and
// quality.
uint64_t ItemNumber(const World& w, uint64_t slot) {
  return slot + Generation(w.seed, slot) * FLAGS_items;
}
uint64_t ItemId(const World& w, uint64_t slot) {
  return Scramble63(ItemNumber(w, slot) + 1, w.key);
}
double ItemQuality(const World& w, uint64_t slot) {
  SplitMix64 rng(Mix64(w.seed * 0x2545f4914f6cdd1dULL + ItemNumber(w, slot)) ^ 0x1a2b);
  const double u1 = std::max(rng.Uniform(), 1e-300), u2 = rng.Uniform();
  return static_cast<float>(std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2));
}

struct Row {
  uint64_t user;
  Item item;
  std::vector<Item> history;  // oldest first
  double p;
  int label;
};

Item DrawItem(const World& w, const Interests& in, bool from_interest, SplitMix64& rng) {
  uint32_t c;
  if (from_interest) {
    const double u = rng.Uniform();
    uint32_t i = 0;
    while (i + 1 < in.n && in.cdf[i] <= u) ++i;
    c = in.cate[i];
  } else {
    c = Draw(w.global_cdf, rng.Uniform());
  }
  const Category& cat = w.cates[c];
  return {cat.start + cat.local.Draw([&rng] { return rng.Uniform(); }), c};
}

// Row `index` of split `split` (0 train, 1 test) for `user`.
void MakeRow(const World& w, int split, uint64_t index, uint64_t user, const Interests& in,
             Row* row) {
  SplitMix64 rng(Mix64(w.seed ^ Mix64((static_cast<uint64_t>(split) << 48) + index + 1) ^
                       (FLAGS_day ? Mix64(0xda7ULL + FLAGS_day) : 0)));
  row->user = user;
  const uint32_t len = static_cast<uint32_t>(rng.Next() % (FLAGS_max_history + 1ULL));
  row->history.clear();
  for (uint32_t j = 0; j < len; ++j)
    row->history.push_back(DrawItem(w, in, rng.Uniform() < 0.8, rng));
  row->item = DrawItem(w, in, rng.Uniform() < 0.5, rng);
  double m = 0;
  bool repeat = false;
  for (const Item& h : row->history) {
    m += h.cate == row->item.cate ? 1 : 0;
    repeat |= h.slot == row->item.slot;
  }
  const double logit = -2.0 + 0.6 * ItemQuality(w, row->item.slot) + 3.0 * (1 - std::exp(-m / 2)) +
                       (repeat ? 0.5 : 0);
  row->p = 1 / (1 + std::exp(-logit));
  row->label = rng.Uniform() < row->p ? 1 : 0;
}

// Writes `row` as one din-tsv line (IDs and 1-based categories); `scratch` holds the
// behaviour lists between calls.
void WriteRow(const World& w, const Row& row, std::vector<uint64_t> (&scratch)[2], TsvWriter* out) {
  auto& [items, cates] = scratch;
  items.clear();
  cates.clear();
  for (const Item& h : row.history) {
    items.push_back(ItemId(w, h.slot));
    cates.push_back(static_cast<uint64_t>(h.cate) + 1);
  }
  out->DinTsvRow(static_cast<uint64_t>(row.label), row.user + 1, ItemId(w, row.item.slot),
                 static_cast<uint64_t>(row.item.cate) + 1, items, cates);
}

// Generates the data set into FLAGS_out and returns the bayes.json line.
din::Result<std::string> Generate() {
  std::error_code ec;
  std::filesystem::create_directories(FLAGS_out, ec);
  if (ec) return Status::IoError("cannot create " + FLAGS_out + ": " + ec.message());

  const World world = BuildWorld();
  Row row;
  std::vector<uint64_t> scratch[2];

  uint64_t train_pos = 0;
  {
    TsvWriter out;
    DIN_RETURN_IF_ERROR(out.Open(FLAGS_out + "/train.tsv"));
    for (uint64_t i = 0; i < FLAGS_rows; ++i) {
      const uint64_t day_key = FLAGS_day ? Mix64(0xda7ULL + FLAGS_day) : 0;
      const uint64_t user = Mix64(FLAGS_seed ^ Mix64(i + 0x77) ^ day_key) % FLAGS_users;
      MakeRow(world, 0, i, user, UserInterests(world, user), &row);
      train_pos += row.label;
      WriteRow(world, row, scratch, &out);
    }
    DIN_RETURN_IF_ERROR(out.Close());
  }

  // Test split, user by user: GAUC exactly per user, AUC from a histogram of p.
  constexpr size_t kBins = 1 << 20;
  std::vector<uint64_t> pos_hist(kBins, 0), neg_hist(kBins, 0);
  std::vector<float> user_labels;
  std::vector<double> user_probs;
  double gauc_sum = 0, gauc_weight = 0, logloss = 0;
  uint64_t gauc_users = 0, test_pos = 0, index = 0;
  {
    TsvWriter out, probs;
    DIN_RETURN_IF_ERROR(out.Open(FLAGS_out + "/test.tsv"));
    if (FLAGS_write_probs) DIN_RETURN_IF_ERROR(probs.Open(FLAGS_out + "/test_probs.txt"));
    // Users past test_rows % users get test_rows / users rows: none when that is 0.
    const uint64_t test_users = FLAGS_test_rows < FLAGS_users ? FLAGS_test_rows : FLAGS_users;
    for (uint64_t u = 0; u < test_users; ++u) {
      const uint64_t n = FLAGS_test_rows / FLAGS_users + (u < FLAGS_test_rows % FLAGS_users);
      user_labels.clear();
      user_probs.clear();
      if (n == 0) continue;
      const Interests interests = UserInterests(world, u);
      for (uint64_t k = 0; k < n; ++k, ++index) {
        MakeRow(world, 1, index, u, interests, &row);
        WriteRow(world, row, scratch, &out);
        if (FLAGS_write_probs) {
          char buf[32];
          std::snprintf(buf, sizeof(buf), "%.17g", row.p);
          probs.Text(buf);
          probs.EndLine();
        }
        user_labels.push_back(static_cast<float>(row.label));
        user_probs.push_back(row.p);
        const size_t bin = std::min(kBins - 1, static_cast<size_t>(row.p * kBins));
        (row.label ? pos_hist : neg_hist)[bin]++;
        test_pos += row.label;
        logloss -= row.label ? std::log(row.p) : std::log1p(-row.p);
      }
      const double auc = din::Auc(user_labels, std::span<const double>(user_probs));
      if (!std::isnan(auc)) {
        gauc_sum += static_cast<double>(n) * auc;
        gauc_weight += static_cast<double>(n);
        ++gauc_users;
      }
    }
    DIN_RETURN_IF_ERROR(out.Close());
    DIN_RETURN_IF_ERROR(probs.Close());
  }
  // AUC from the histogram: pairs in the same bin count 1/2.
  double neg_below = 0, wins = 0;
  for (size_t b = 0; b < kBins; ++b) {
    wins += static_cast<double>(pos_hist[b]) * (neg_below + 0.5 * static_cast<double>(neg_hist[b]));
    neg_below += static_cast<double>(neg_hist[b]);
  }
  const double test_neg = static_cast<double>(index - test_pos);
  const double auc = (test_pos > 0 && test_neg > 0) ? wins / (test_pos * test_neg) : NAN;
  const double gauc = gauc_weight > 0 ? gauc_sum / gauc_weight : NAN;

  din::Json j;
  j["test_auc"] = din::JsonNumber(auc);
  j["test_gauc"] = din::JsonNumber(gauc);
  j["test_logloss"] = din::JsonNumber(index ? logloss / index : NAN);
  j["test_rows"] = index;
  j["test_positive_rate"] = din::JsonNumber(index ? 1.0 * test_pos / index : NAN);
  j["gauc_users"] = gauc_users;
  j["train_rows"] = FLAGS_rows;
  j["train_positive_rate"] = din::JsonNumber(FLAGS_rows ? 1.0 * train_pos / FLAGS_rows : NAN);
  j["users"] = FLAGS_users;
  j["items"] = FLAGS_items;
  j["cates"] = FLAGS_cates;
  j["max_history"] = FLAGS_max_history;
  j["seed"] = FLAGS_seed;
  if (FLAGS_day > 0 || FLAGS_drift > 0) {
    j["day"] = FLAGS_day;
    j["drift"] = din::JsonNumber(FLAGS_drift);
  }
  const std::string json = din::JsonLine(j) + "\n";
  TsvWriter bayes;
  DIN_RETURN_IF_ERROR(bayes.Open(FLAGS_out + "/bayes.json"));
  bayes.Text(json);
  DIN_RETURN_IF_ERROR(bayes.Close());
  return json;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("din_gen --out DIR [--rows N] [--test-rows N] ... (see the source)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  std::string usage_error;
  if (FLAGS_out.empty())
    usage_error = "--out DIR is required";
  else if (FLAGS_users == 0 || FLAGS_items == 0 || FLAGS_cates == 0)
    usage_error = "--users, --items and --cates must be > 0";
  else if (!(FLAGS_zipf >= 0 && FLAGS_zipf <= 20))
    usage_error = "--zipf must be in [0, 20]";
  else if (!(FLAGS_drift >= 0 && FLAGS_drift <= 1))
    usage_error = "--drift must be in [0, 1]";
  else if (FLAGS_items > (1ULL << 62) / (FLAGS_day + 2ULL))
    usage_error = "--items times --day too large for 63-bit item IDs";
  if (!usage_error.empty()) {
    std::fprintf(stderr, "din_gen: %s\nusage: %s\n", usage_error.c_str(), gflags::ProgramUsage());
    return 2;
  }
  const din::Result<std::string> json = Generate();
  if (!json.ok()) {
    std::fprintf(stderr, "din_gen: %s\n", json.status().message().c_str());
    return 1;
  }
  std::fputs(json->c_str(), stdout);
  return 0;
}
