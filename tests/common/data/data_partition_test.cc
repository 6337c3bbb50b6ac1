// Partitioning: for W workers over several file counts and sizes, the union of what the
// workers read is every line exactly once.
#include "common/data/partition.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/reader.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::TempDir;
using test::WriteFile;

TEST(PartitionTest, EveryLineReadByExactlyOneWorker) {
  // file count -> line counts per file (varied line lengths, one file without a final
  // newline, one CRLF file).
  const std::vector<std::vector<int>> layouts = {{1},
                                                 {7},
                                                 {250},
                                                 {3, 500},
                                                 {40, 41, 39},
                                                 {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
                                                 {100, 5, 300, 17, 60, 2, 90, 33, 8, 150}};
  for (size_t l = 0; l < layouts.size(); ++l) {
    TempDir dir;
    std::map<std::string, int> expected;  // user id -> count
    for (size_t f = 0; f < layouts[l].size(); ++f) {
      std::string text;
      for (int i = 0; i < layouts[l][f]; ++i) {
        const std::string user = std::to_string((f + 1) * 1000000 + i);
        std::string hist;
        for (int j = 0; j < (i * 7) % 23; ++j) hist += (j ? "," : "") + std::to_string(j);
        std::string cates = hist;
        text += "1\t" + user + "\t5\t6\t" + hist + "\t" + cates + (f == 3 ? "\r\n" : "\n");
        expected[user] = 1;
      }
      if (f == 1 && !text.empty()) text.pop_back();  // final line without newline
      WriteFile(dir / ("d/part-" + std::to_string(100 + f)), text);
    }
    for (int workers = 1; workers <= 5; ++workers) {
      std::map<std::string, int> seen;
      for (int w = 0; w < workers; ++w) {
        config::DataConfig cfg;
        cfg.set_batch_size(7);
        cfg.set_max_history(0);
        auto reader = Reader::Open(cfg, {dir / "d", w, workers, false});
        ASSERT_TRUE(reader.ok()) << reader.status().ToString();
        Batch batch;
        for (;;) {
          auto more = (*reader)->NextBatch(&batch);
          ASSERT_TRUE(more.ok()) << more.status().ToString();
          if (!*more) break;
          for (uint64_t u : batch.users) ++seen[std::to_string(u)];
        }
      }
      EXPECT_EQ(seen, expected) << "layout " << l << " workers " << workers;
    }
  }
}

// One small file, every line count up to 40 and W up to 7: the byte cuts land on line
// starts, on line breaks and inside lines, and every line is still read exactly once.
TEST(PartitionTest, ByteRangeCutsAtEveryKindOfPosition) {
  TempDir dir;
  for (int n = 1; n <= 40; ++n) {
    std::string text;
    for (int i = 0; i < n; ++i)
      text += "1\t" + std::to_string(1 + i * 37 % 1000) + "\t2\t3\t\t" + (i % 3 ? "\n" : "\r\n");
    const std::string path = dir / ("f" + std::to_string(n) + ".tsv");
    WriteFile(path, n % 2 ? text.substr(0, text.size() - 1) : text);
    for (int workers = 1; workers <= 7; ++workers) {
      std::multiset<uint64_t> seen;
      for (int w = 0; w < workers; ++w) {
        config::DataConfig cfg;
        cfg.set_batch_size(3);
        auto reader = Reader::Open(cfg, {path, w, workers, w % 2 == 0});
        ASSERT_TRUE(reader.ok());
        Batch batch;
        for (;;) {
          auto more = (*reader)->NextBatch(&batch);
          ASSERT_TRUE(more.ok()) << more.status().ToString() << " n=" << n << " W=" << workers;
          if (!*more) break;
          seen.insert(batch.users.begin(), batch.users.end());
        }
      }
      std::multiset<uint64_t> want;
      for (int i = 0; i < n; ++i) want.insert(1 + i * 37 % 1000);
      ASSERT_EQ(seen, want) << "n=" << n << " W=" << workers;
    }
  }
}

TEST(PartitionTest, WholeFilesWhenManyByteRangesWhenFew) {
  std::vector<InputFile> many;
  for (int i = 0; i < 8; ++i) many.push_back({"f" + std::to_string(i), 1000});
  for (int w = 0; w < 4; ++w) {
    auto segs = PartitionInput(many, w, 4);
    ASSERT_EQ(segs.size(), 2u);
    for (const auto& s : segs) {
      EXPECT_EQ(s.begin, 0u);
      EXPECT_EQ(s.end, 1000u);
    }
  }
  std::vector<InputFile> one = {{"f", 1000}};
  uint64_t covered = 0;
  for (int w = 0; w < 3; ++w) {
    auto segs = PartitionInput(one, w, 3);
    ASSERT_EQ(segs.size(), 1u);
    covered += segs[0].end - segs[0].begin;
    EXPECT_EQ(segs[0].begin, static_cast<uint64_t>(1000 * w / 3));
  }
  EXPECT_EQ(covered, 1000u);
  // Every byte in exactly one segment, for uneven sizes.
  std::vector<InputFile> uneven = {{"a", 10}, {"b", 5000}, {"c", 1}, {"d", 700}};
  for (int workers = 1; workers <= 5; ++workers) {
    std::vector<std::vector<int>> owner(uneven.size());
    for (size_t f = 0; f < uneven.size(); ++f) owner[f].assign(uneven[f].size, 0);
    for (int w = 0; w < workers; ++w)
      for (const auto& s : PartitionInput(uneven, w, workers))
        for (uint64_t b = s.begin; b < s.end; ++b) ++owner[s.file][b];
    for (const auto& f : owner)
      for (int c : f) ASSERT_EQ(c, 1);
  }
}

}  // namespace
}  // namespace din
