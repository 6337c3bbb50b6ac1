// PREPASS counts: each ID once per sample per table; the workers' counts sum to the whole.
#include "common/data/id_counts.h"

#include <gtest/gtest.h>

#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::TempDir;
using test::WriteFile;

TEST(IdCountsTest, CountsSamplesContainingEachId) {
  TempDir dir;
  // Item 5 is the candidate and in the history of line 1: counted once there.
  WriteFile(dir / "f.tsv",
            "1\t7\t5\t1\t5,6,5\t1,1,1\n"
            "0\t7\t6\t1\t\t\n"
            "1\t8\t9\t2\t5\t1\n");
  config::DataConfig cfg;
  auto counts = CountIds(cfg, dir / "f.tsv", 0, 1);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  ASSERT_EQ(counts->tables, (std::vector<std::string>{"user", "item", "cate"}));
  EXPECT_EQ(counts->samples, 3u);
  const auto& user = counts->counts[0];
  const auto& item = counts->counts[1];
  const auto& cate = counts->counts[2];
  EXPECT_EQ(user.at(7), 2u);
  EXPECT_EQ(user.at(8), 1u);
  EXPECT_EQ(item.at(5), 2u);
  EXPECT_EQ(item.at(6), 2u);
  EXPECT_EQ(item.at(9), 1u);
  EXPECT_EQ(cate.at(1), 3u);
  EXPECT_EQ(cate.at(2), 1u);

  // Two workers' maps sum to the single-worker map.
  std::string text;
  for (int i = 0; i < 500; ++i)
    text += "1\t" + std::to_string(i % 13) + "\t" + std::to_string(i % 17) + "\t3\t" +
            std::to_string(i % 5) + "\t4\n";
  WriteFile(dir / "g.tsv", text);
  auto all = CountIds(cfg, dir / "g.tsv", 0, 1);
  auto w0 = CountIds(cfg, dir / "g.tsv", 0, 2);
  auto w1 = CountIds(cfg, dir / "g.tsv", 1, 2);
  ASSERT_TRUE(all.ok() && w0.ok() && w1.ok());
  EXPECT_EQ(w0->samples + w1->samples, 500u);
  for (size_t t = 0; t < all->tables.size(); ++t)
    for (const auto& [id, n] : all->counts[t]) {
      uint64_t sum = 0;
      if (auto it = w0->counts[t].find(id); it != w0->counts[t].end()) sum += it->second;
      if (auto it = w1->counts[t].find(id); it != w1->counts[t].end()) sum += it->second;
      EXPECT_EQ(sum, n);
    }
}

}  // namespace
}  // namespace din
