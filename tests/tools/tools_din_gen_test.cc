// din_gen: determinism, its Bayes AUC/GAUC against an independent computation, the
// planted structure (a candidate-only model stays clearly below the ceiling), and the
// round trip generator -> reader.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/metrics.h"
#include "common/data/reader.h"
#include "common/json.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::ReadFile;
using test::RunCommand;
using test::TempDir;

double JsonField(const std::string& json, const std::string& key) {
  const Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return NAN;
  return j[key].get<double>();
}

std::string Gen(const std::string& out, const std::string& flags) {
  return std::string(DIN_GEN_BIN) + " --out " + out + " " + flags + " > /dev/null";
}

TEST(GenTest, SameSeedSameBytes) {
  TempDir dir;
  const std::string flags = "--rows 3000 --test-rows 500 --users 200 --items 5000 --cates 30";
  ASSERT_EQ(RunCommand(Gen(dir / "a", flags + " --seed 3")), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "b", flags + " --seed 3")), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "c", flags + " --seed 4")), 0);
  for (const char* f : {"train.tsv", "test.tsv", "bayes.json"})
    EXPECT_EQ(ReadFile(dir / "a/" + f), ReadFile(dir / "b/" + f)) << f;
  EXPECT_NE(ReadFile(dir / "a/train.tsv"), ReadFile(dir / "c/train.tsv"));
}

TEST(GenTest, BayesMetricsAndPlantedStructure) {
  TempDir dir;
  ASSERT_EQ(RunCommand(Gen(dir.path(),
                           "--rows 60000 --test-rows 12000 --users 1000 --items 20000 "
                           "--cates 50 --seed 9 --write-probs")),
            0);
  const std::string json = ReadFile(dir / "bayes.json");

  // Round trip: the reader reads every row; labels and users come with it.
  config::DataConfig cfg;
  cfg.set_batch_size(1000);
  cfg.set_max_history(0);
  cfg.set_train_path(dir / "train.tsv");
  cfg.set_test_path(dir / "test.tsv");
  auto test_reader = Reader::OpenTest(cfg, 0, 1);
  ASSERT_TRUE(test_reader.ok()) << test_reader.status().ToString();
  std::vector<uint64_t> users, items;
  std::vector<float> labels;
  Batch batch;
  for (;;) {
    auto more = (*test_reader)->NextBatch(&batch);
    ASSERT_TRUE(more.ok()) << more.status().ToString();
    if (!*more) break;
    users.insert(users.end(), batch.users.begin(), batch.users.end());
    labels.insert(labels.end(), batch.labels.begin(), batch.labels.end());
    items.insert(items.end(), batch.candidate_fields[0].ids.begin(),
                 batch.candidate_fields[0].ids.end());
  }
  ASSERT_EQ(labels.size(), 12000u);
  std::vector<double> probs;
  {
    const std::string text = ReadFile(dir / "test_probs.txt");
    const char* p = text.c_str();
    char* end;
    for (double v = std::strtod(p, &end); end != p; v = std::strtod(p, &end)) {
      probs.push_back(v);
      p = end;
    }
  }
  ASSERT_EQ(probs.size(), labels.size());

  // Independent computation of the ceiling.
  const double auc = Auc(labels, std::span<const double>(probs));
  const double gauc = Gauc(users, labels, std::span<const double>(probs));
  EXPECT_NEAR(JsonField(json, "test_auc"), auc, 2e-5);  // histogram + 6 digits
  EXPECT_NEAR(JsonField(json, "test_gauc"), gauc, 2e-6);
  EXPECT_GT(auc, 0.75);

  // The best a candidate-only model can do: the smoothed click rate of each item in
  // the training split.
  std::unordered_map<uint64_t, std::pair<double, double>> ctr;  // item -> (clicks, rows)
  double clicks = 0, rows = 0;
  auto train_reader = Reader::Open(cfg, {dir / "train.tsv", 0, 1, false});
  ASSERT_TRUE(train_reader.ok());
  for (;;) {
    auto more = (*train_reader)->NextBatch(&batch);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
    for (size_t r = 0; r < batch.size; ++r) {
      auto& c = ctr[batch.candidate_fields[0].ids[r]];
      c.first += batch.labels[r];
      c.second += 1;
      clicks += batch.labels[r];
      rows += 1;
    }
  }
  const double prior = clicks / rows;
  std::vector<double> candidate_only;
  for (uint64_t item : items) {
    auto it = ctr.find(item);
    const double c = it == ctr.end() ? 0 : it->second.first,
                 n = it == ctr.end() ? 0 : it->second.second;
    candidate_only.push_back((c + 5 * prior) / (n + 5));
  }
  const double cand_auc = Auc(labels, std::span<const double>(candidate_only));
  EXPECT_LT(cand_auc, auc - 0.08) << "candidate-only " << cand_auc << " vs ceiling " << auc;
  std::printf("ceiling AUC %.4f GAUC %.4f, candidate-only AUC %.4f\n", auc, gauc, cand_auc);
}

// The six columns of a din-tsv line.
std::vector<std::string> Columns(const std::string& line) {
  std::vector<std::string> cols(1);
  for (char ch : line) {
    if (ch == '\t')
      cols.emplace_back();
    else
      cols.back() += ch;
  }
  cols.resize(6);
  return cols;
}

// The item IDs (candidates and behaviours) of a din-tsv file.
std::unordered_set<uint64_t> ItemIds(const std::string& path) {
  std::unordered_set<uint64_t> ids;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<std::string> cols = Columns(line);
    ids.insert(std::stoull(cols[2]));
    std::istringstream hist(cols[4]);
    for (std::string h; std::getline(hist, h, ',');) ids.insert(std::stoull(h));
  }
  return ids;
}

// Fraction of the IDs in `b` that also occur in `a`.
double SharedFraction(const std::unordered_set<uint64_t>& a,
                      const std::unordered_set<uint64_t>& b) {
  size_t shared = 0;
  for (uint64_t id : b) shared += a.count(id);
  return b.empty() ? NAN : static_cast<double>(shared) / static_cast<double>(b.size());
}

TEST(GenTest, DaysWithDriftingItems) {
  TempDir dir;
  // Few items and many draws, so that each day's rows show (nearly) every item.
  const std::string flags =
      "--rows 6000 --test-rows 500 --users 300 --items 1000 --cates 20 --zipf 0.8 --seed 5";
  ASSERT_EQ(RunCommand(Gen(dir / "plain", flags)), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "d0", flags + " --day 0 --drift 0.3")), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "d1", flags + " --day 1 --drift 0.3")), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "d1still", flags + " --day 1")), 0);
  ASSERT_EQ(RunCommand(Gen(dir / "d2", flags + " --day 2 --drift 0.3")), 0);
  // Day 0 is the output without the flags, whatever the drift.
  for (const char* f : {"train.tsv", "test.tsv"})
    EXPECT_EQ(ReadFile(dir / "plain/" + f), ReadFile(dir / "d0/" + f)) << f;
  EXPECT_EQ(JsonField(ReadFile(dir / "d1/bayes.json"), "day"), 1);
  EXPECT_TRUE(std::isnan(JsonField(ReadFile(dir / "plain/bayes.json"), "day")));
  // Another day is another sample of rows.
  EXPECT_NE(ReadFile(dir / "plain/train.tsv"), ReadFile(dir / "d1still/train.tsv"));
  EXPECT_NE(ReadFile(dir / "plain/test.tsv"), ReadFile(dir / "d1still/test.tsv"));

  const auto day0 = ItemIds(dir / "plain/train.tsv");
  const auto day1 = ItemIds(dir / "d1/train.tsv");
  const auto day2 = ItemIds(dir / "d2/train.tsv");
  EXPECT_GT(day0.size(), 900u);
  // Without drift the items stay; with drift 0.3 about 70% of day 1's items are day 0's,
  // and the turnover continues on day 2.
  EXPECT_GT(SharedFraction(day0, ItemIds(dir / "d1still/train.tsv")), 0.97);
  const double shared01 = SharedFraction(day0, day1), shared12 = SharedFraction(day1, day2),
               shared02 = SharedFraction(day0, day2);
  EXPECT_NEAR(shared01, 0.7, 0.07);
  EXPECT_NEAR(shared12, 0.7, 0.07);
  EXPECT_NEAR(shared02, 0.4, 0.08);
  // Tomorrow's test rows show items that today's training rows never did.
  EXPECT_LT(SharedFraction(day0, ItemIds(dir / "d1/test.tsv")), 0.85);
  std::printf("shared item IDs: day 0/1 %.3f, 1/2 %.3f, 0/2 %.3f\n", shared01, shared12, shared02);
}

// Runs din_gen with `args` (stdout discarded) and returns its peak RSS in KiB, -1 on
// failure.
long GenPeakRssKib(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string bin = DIN_GEN_BIN;
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  if (pid < 0 || wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    return -1;
  return ru.ru_maxrss;
}

// Number of candidate and behaviour slots in `path` per category (1-based column value).
std::unordered_map<uint64_t, double> DrawsPerCategory(const std::string& path) {
  std::unordered_map<uint64_t, double> draws;
  std::istringstream in(ReadFile(path));
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<std::string> cols = Columns(line);
    draws[std::stoull(cols[3])] += 1;
    std::istringstream hist(cols[5]);
    for (std::string h; std::getline(hist, h, ',');) draws[std::stoull(h)] += 1;
  }
  return draws;
}

TEST(GenTest, MemoryIndependentOfItemsAndDistinctIds) {
  TempDir dir;
  // Uniform popularity within a category (--zipf 0): category c holds
  // n_c = round(items F(c)) - round(items F(c - 1)) items, F the Zipf(0.8) share CDF, so
  // D_c draws show n_c (1 - (1 - 1/n_c)^D_c) distinct items on average.
  const uint64_t cates = 50;
  std::vector<double> share_cdf(cates);
  double acc = 0;
  for (uint64_t c = 0; c < cates; ++c) share_cdf[c] = acc += std::pow(c + 1.0, -0.8);
  for (auto& x : share_cdf) x /= acc;
  long rss[2] = {0, 0};
  const uint64_t items_of[2] = {100000, 1000000000};
  for (int i = 0; i < 2; ++i) {
    const std::string out = dir / ("items" + std::to_string(i));
    rss[i] = GenPeakRssKib({"--out", out, "--rows", "3000", "--test-rows", "300", "--users",
                            "1000000", "--items", std::to_string(items_of[i]), "--cates",
                            std::to_string(cates), "--zipf", "0", "--seed", "4"});
    ASSERT_GT(rss[i], 0) << "din_gen failed";
    const double items = static_cast<double>(items_of[i]);
    double expected = 0, draws = 0;
    for (const auto& [cate, d] : DrawsPerCategory(out + "/train.tsv")) {
      const uint64_t c = cate - 1;
      const double n =
          std::round(items * share_cdf[c]) - (c ? std::round(items * share_cdf[c - 1]) : 0);
      expected += n * (1 - std::pow(1 - 1 / n, d));
      draws += d;
    }
    const double distinct = static_cast<double>(ItemIds(out + "/train.tsv").size());
    EXPECT_NEAR(distinct, expected, 0.02 * expected) << "items " << items_of[i];
    std::printf("items %lu: %.0f draws, %.0f distinct IDs (expected %.0f), peak RSS %ld KiB\n",
                static_cast<unsigned long>(items_of[i]), draws, distinct, expected, rss[i]);
    if (i == 0) {
      EXPECT_LT(distinct, 0.9 * draws);  // repeats are frequent at 1e5 items
    } else {
      EXPECT_GT(distinct, 0.98 * draws);  // and rare at 1e9
    }
  }
  // 10^4 times the items: the same memory, within 32 MiB. Under ASan the allocator's
  // quarantine keeps freed blocks resident, and the longer ID strings at 1e9 items add
  // about 15 MiB there; any per-item state would add at least 1e9 bits (119 MiB).
  EXPECT_LT(rss[1], rss[0] + 32768) << rss[0] << " KiB at 1e5 items, " << rss[1] << " at 1e9";
}

TEST(GenTest, UsageAndOutputErrors) {
  TempDir dir;
  const std::string bin = DIN_GEN_BIN;
  const std::string err = dir / "err.txt";
  EXPECT_EQ(RunCommand(bin + " --rows 10 2> " + err), 2);
  EXPECT_EQ(ReadFile(err).rfind("din_gen: --out DIR is required\nusage: din_gen --out DIR", 0), 0u)
      << ReadFile(err);
  EXPECT_EQ(RunCommand(bin + " --out " + dir / "x --users 0 2> " + err), 2);
  EXPECT_EQ(ReadFile(err).rfind("din_gen: --users, --items and --cates must be > 0\n", 0), 0u)
      << ReadFile(err);
  EXPECT_EQ(RunCommand(bin + " --out " + dir / "x --drift 1.5 2> " + err), 2);
  EXPECT_EQ(ReadFile(err).rfind("din_gen: --drift must be in [0, 1]\n", 0), 0u) << ReadFile(err);
  // An output file that cannot be written: an error naming it, no abort.
  std::filesystem::create_directories(dir / "full");
  std::filesystem::create_symlink("/dev/full", dir / "full/train.tsv");
  EXPECT_EQ(RunCommand(Gen(dir / "full",
                           "--rows 20000 --test-rows 10 --users 10 --items 100 "
                           "--cates 5 2> " +
                               err)),
            1);
  EXPECT_EQ(ReadFile(err).rfind("din_gen: cannot write " + dir / "full/train.tsv" + ": ", 0), 0u)
      << ReadFile(err);
}

}  // namespace
}  // namespace din
