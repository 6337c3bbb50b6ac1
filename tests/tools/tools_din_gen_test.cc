// din_gen: determinism, its Bayes AUC/GAUC against an independent computation, the
// planted structure (a candidate-only model stays clearly below the ceiling), and the
// round trip generator -> reader.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unordered_map>
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
