// PREPASS counts: each ID once per sample per table; the workers' counts sum to the whole;
// a count map far smaller than the distinct IDs gives the same sums over its flushes.
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
  auto counts = CountIdsInMemory(cfg, dir / "f.tsv", 0, 1);
  ASSERT_TRUE(counts.ok()) << counts.status().ToString();
  ASSERT_EQ(counts->tables, (std::vector<std::string>{"user", "item", "cate"}));
  EXPECT_EQ(counts->samples, 3u);
  EXPECT_EQ(counts->flushes, 1u);
  const auto& user = counts->counts[0];
  const auto& item = counts->counts[1];
  const auto& cate = counts->counts[2];
  EXPECT_EQ(user.size(), 2u);
  EXPECT_EQ(item.size(), 3u);
  EXPECT_EQ(cate.size(), 2u);
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
  auto all = CountIdsInMemory(cfg, dir / "g.tsv", 0, 1);
  auto w0 = CountIdsInMemory(cfg, dir / "g.tsv", 0, 2);
  auto w1 = CountIdsInMemory(cfg, dir / "g.tsv", 1, 2);
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

TEST(IdCountsTest, TinyMapFlushesAndGivesTheSameCounts) {
  TempDir dir;
  // 3000 samples over ~2000 users and ~1500 items with histories of 3: thousands of
  // distinct (table, id) pairs against a map of 64 slots (48 held before a flush).
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    const int item = (i * 7919) % 1499;
    text += std::to_string(i % 2) + "\t" + std::to_string((i * 31) % 2003) + "\t" +
            std::to_string(item) + "\t" + std::to_string(item % 40) + "\t" +
            std::to_string((item + 1) % 1499) + "," + std::to_string((item + 2) % 1499) + "," +
            std::to_string(item) + "\t" + std::to_string(item % 40) + "," +
            std::to_string((item + 1) % 40) + ",1\n";
  }
  WriteFile(dir / "h.tsv", text);
  config::DataConfig cfg;
  auto big = CountIdsInMemory(cfg, dir / "h.tsv", 0, 1, 16 << 20);
  auto tiny = CountIdsInMemory(cfg, dir / "h.tsv", 0, 1, 64 * kCountSlotBytes);
  ASSERT_TRUE(big.ok() && tiny.ok());
  EXPECT_EQ(big->flushes, 1u);
  EXPECT_GT(tiny->flushes, 50u);
  ASSERT_EQ(big->counts.size(), 3u);
  EXPECT_GT(big->counts[0].size(), 1900u);
  EXPECT_EQ(big->samples, tiny->samples);
  EXPECT_EQ(big->counts, tiny->counts);

  // The sink sees each ID at most once per flush, at most `chunk` IDs per call.
  size_t calls = 0, max_ids = 0;
  auto sink = [&](int, std::span<const uint64_t> ids, std::span<const uint32_t> n) {
    ++calls;
    max_ids = std::max(max_ids, ids.size());
    EXPECT_EQ(ids.size(), n.size());
    return Status::Ok();
  };
  auto stats = CountIds(cfg, dir / "h.tsv", 0, 1, 1 << 20, 100, sink);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(max_ids, 100u);
  EXPECT_GT(calls, 30u);

  // A sink error ends the scan with that error.
  auto failing = [](int, std::span<const uint64_t>, std::span<const uint32_t>) {
    return Status::IoError("server gone");
  };
  auto bad = CountIds(cfg, dir / "h.tsv", 0, 1, 64 * kCountSlotBytes, 100, failing);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("server gone"), std::string::npos);
}

}  // namespace
}  // namespace din
