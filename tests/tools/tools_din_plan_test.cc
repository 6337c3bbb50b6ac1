// din_plan: rows, bytes and shards per server and table from the config, --rows or a
// MANIFEST; refusals name the server and the shortfall, or the table past 2^28 rows per
// shard.
#include <string>

#include <gtest/gtest.h>

#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::RunCommand;
using test::TempDir;

// Two tables: "a" dim 8 with SGD (12 + 32 + 5 = 49 bytes per row) in 4 shards, "b" dim 4
// with Adagrad (4 state floats: 12 + 32 + 5 = 49 bytes too) in 1 shard.
constexpr char kConfig[] = R"pb(
  tables {
    name: "a"
    dim: 8
    shards: 4
    expected_rows_per_shard: 1000
    optimizer { sgd {} }
  }
  tables {
    name: "b"
    dim: 4
    optimizer { adagrad {} }
  }
  ps { memory_limit_bytes: 1000000 }
)pb";

int Plan(const TempDir& dir, const std::string& args, std::string* out) {
  return RunCommand(
      std::string(DIN_PLAN_BIN) + " --config " + (dir / "job.pbtxt") + " " + args + " 2>&1", out);
}

TEST(DinPlanTest, PlacesRowsAndRefusesWhatDoesNotFit) {
  TempDir dir;
  test::WriteFile(dir / "job.pbtxt", kConfig);
  std::string out;
  // Config rows: a = 4000 over 4 shards; on 2 servers (shards alternate) 2 shards each;
  // b's one shard on server 0 (global shard 4).
  ASSERT_EQ(Plan(dir, "--servers 2 --workers 1", &out), 0) << out;
  EXPECT_NE(out.find("0        a                       2             2000              98000"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("expected_rows_per_shard"), std::string::npos) << out;
  EXPECT_NE(out.find("server 1: 98000 bytes of tables"), std::string::npos) << out;

  // 30000 rows of b on server 0: 1470000 bytes plus 6 per row while its index grows.
  ASSERT_EQ(Plan(dir, "--servers 2 --workers 1 --rows b=30000", &out), 1) << out;
  EXPECT_NE(out.find("REFUSED: server 0 needs 1748000 bytes, 748000 more than its budget of "
                     "1000000 bytes"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("REFUSED: server 1"), std::string::npos) << out;
  // A larger budget through --set fits.
  EXPECT_EQ(
      Plan(dir, "--servers 2 --workers 1 --rows b=30000 --set ps.memory_limit_bytes=2000000", &out),
      0)
      << out;

  // 2^30 rows of a in 4 shards: past 2^28 - 1 per shard.
  ASSERT_EQ(Plan(dir,
                 "--servers 2 --workers 1 --rows a=1073741824 --set "
                 "ps.memory_limit_bytes=1000000000000",
                 &out),
            1)
      << out;
  EXPECT_NE(out.find("REFUSED: table a: 1073741824 rows over 4 shards is 268435456 rows per "
                     "shard"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("use at least 5 shards"), std::string::npos) << out;

  // Rows from a dump's MANIFEST.
  test::WriteFile(dir / "dump/MANIFEST",
                  "din-dump 1\nstep 7\ntable a dim 8 shards 4 rows 40 format npy counts 0\n"
                  "part a 0 rows 10\npart a 1 rows 10\n"
                  "part a 2 rows 10\npart a 3 rows 10\n"
                  "config\n");
  test::WriteFile(dir / "dump/_SUCCESS", "");
  ASSERT_EQ(Plan(dir, "--servers 1 --workers 1 --from " + (dir / "dump"), &out), 0) << out;
  EXPECT_NE(out.find("0        a                       4               40               1960"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace din
