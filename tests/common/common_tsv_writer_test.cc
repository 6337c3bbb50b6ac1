// TsvWriter (common/tsv_writer.h): the din-tsv line format, output larger than its buffer,
// and errors (a file that cannot be created, a full device) reported as Status.
#include "common/tsv_writer.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::ReadFile;

class TsvWriterTest : public ::testing::Test {
 protected:
  test::TempDir tmp_{"din_tsv"};
  const std::string dir_ = tmp_.path();
};

TEST_F(TsvWriterTest, DinTsvRows) {
  TsvWriter w;
  ASSERT_TRUE(w.Open(dir_ + "/a.tsv").ok());
  const std::vector<uint64_t> items = {10, 20, 18446744073709551615ULL}, cates = {1, 2, 3};
  w.DinTsvRow(1, 7, 99, 4, items, cates);
  w.DinTsvRow(0, 8, 5, 6, {}, {});
  EXPECT_EQ(w.lines(), 2u);
  ASSERT_TRUE(w.Close().ok());
  EXPECT_EQ(ReadFile(dir_ + "/a.tsv"),
            "1\t7\t99\t4\t10,20,18446744073709551615\t1,2,3\n"
            "0\t8\t5\t6\t\t\n");
}

TEST_F(TsvWriterTest, PiecesAndLines) {
  TsvWriter w;
  ASSERT_TRUE(w.Open(dir_ + "/b.txt").ok());
  w.Text("p=");
  w.Num(0);
  w.Char(';');
  w.NumList(std::vector<uint64_t>{3});
  w.EndLine();
  w.EndLine();
  ASSERT_TRUE(w.Close().ok());
  EXPECT_EQ(ReadFile(dir_ + "/b.txt"), "p=0;3\n\n");
  EXPECT_EQ(w.lines(), 2u);
  EXPECT_TRUE(w.Close().ok());  // closing again is harmless
}

TEST_F(TsvWriterTest, OutputLargerThanTheBuffer) {
  std::string expected;
  {
    TsvWriter w;
    ASSERT_TRUE(w.Open(dir_ + "/big.tsv").ok());
    for (uint64_t i = 0; i < 300000; ++i) {
      w.Num(i * 1000003);
      w.Char('\t');
      w.Num(i);
      w.EndLine();
      expected += std::to_string(i * 1000003) + "\t" + std::to_string(i) + "\n";
    }
    ASSERT_GT(expected.size(), 2 * TsvWriter::kBufferBytes);
  }  // the destructor writes the rest
  EXPECT_EQ(ReadFile(dir_ + "/big.tsv"), expected);
}

TEST_F(TsvWriterTest, OpenTruncates) {
  std::ofstream(dir_ + "/c.tsv") << "old contents that are longer\n";
  TsvWriter w;
  ASSERT_TRUE(w.Open(dir_ + "/c.tsv").ok());
  w.Num(1);
  w.EndLine();
  ASSERT_TRUE(w.Close().ok());
  EXPECT_EQ(ReadFile(dir_ + "/c.tsv"), "1\n");
}

TEST_F(TsvWriterTest, CannotCreate) {
  TsvWriter w;
  const std::string path = dir_ + "/no/such/dir/x.tsv";
  const Status st = w.Open(path);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("cannot create " + path), std::string::npos) << st.message();
  EXPECT_TRUE(w.Close().ok());  // nothing open
}

TEST_F(TsvWriterTest, WriteErrorIsReturnedByClose) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  TsvWriter w;
  ASSERT_TRUE(w.Open("/dev/full").ok());
  for (int i = 0; i < 400000; ++i) {  // more than the buffer: a write fails on the way
    w.Num(123456789);
    w.EndLine();
  }
  const Status st = w.Close();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("cannot write /dev/full"), std::string::npos) << st.message();
}

TEST_F(TsvWriterTest, ErrorOnCloseOnly) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  TsvWriter w;
  ASSERT_TRUE(w.Open("/dev/full").ok());
  w.Num(1);
  w.EndLine();
  EXPECT_FALSE(w.Close().ok());
}

}  // namespace
}  // namespace din
