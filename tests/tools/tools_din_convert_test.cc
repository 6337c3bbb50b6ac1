// din_convert on fixtures the test writes (ml-100k, ml-latest, Amazon) and on the real
// ml-latest-small when it is present.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/reader.h"
#include "common/hash.h"
#include "common/json.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::ReadFile;
using test::RunCommand;
using test::TempDir;
using test::WriteFile;

struct Row {
  int label;
  uint64_t user, item, cate;
  std::vector<uint64_t> hist_items, hist_cates;
};

// Reads a din-tsv file with the project's reader (so the output is also checked valid).
std::vector<Row> ReadRows(const std::string& path) {
  std::vector<Row> rows;
  config::DataConfig cfg;
  cfg.set_max_history(0);
  cfg.set_batch_size(512);
  auto reader = Reader::Open(cfg, {path, 0, 1, false});
  if (!reader.ok()) {
    ADD_FAILURE() << reader.status().ToString();
    return rows;
  }
  Batch b;
  for (;;) {
    auto more = (*reader)->NextBatch(&b);
    if (!more.ok()) {
      ADD_FAILURE() << more.status().ToString();
      return rows;
    }
    if (!*more) break;
    for (size_t r = 0; r < b.size; ++r) {
      Row row{static_cast<int>(b.labels[r]), b.users[r], b.candidate_fields[0].ids[r],
              b.candidate_fields[1].ids[r],  {},         {}};
      for (uint32_t k = b.behavior_fields[0].begin(r); k < b.behavior_fields[0].end(r); ++k) {
        row.hist_items.push_back(b.behavior_fields[0].ids[k]);
        row.hist_cates.push_back(b.behavior_fields[1].ids[k]);
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::string Convert(const std::string& args) {
  return std::string(DIN_CONVERT_BIN) + " " + args + " > /dev/null";
}

TEST(ConvertTest, MovieLens100k) {
  TempDir dir;
  // user item rating time; user 1 rated out of time order in the file.
  WriteFile(dir / "ml/u.data",
            "1\t10\t5\t300\n1\t11\t3\t100\n1\t12\t4\t200\n2\t10\t1\t50\n2\t12\t4\t60\n"
            "3\t11\t5\t10\n");
  const std::string flags19_action = "0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0";
  const std::string flags19_drama = "0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0";
  WriteFile(dir / "ml/u.item", "10|A (1995)|01-Jan-1995||http://x|" + flags19_action +
                                   "\n11|B (1995)|01-Jan-1995||http://x|" + flags19_drama +
                                   "\n12|C (1995)|01-Jan-1995||http://x|" + flags19_action + "\n");
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " + dir / "out --test-fraction 0")), 0);
  auto train = ReadRows(dir / "out/train.tsv");
  EXPECT_EQ(std::filesystem::file_size(dir / "out/test.tsv"), 0u);
  ASSERT_EQ(train.size(), 6u);
  std::map<std::pair<uint64_t, uint64_t>, Row> by_key;
  for (auto& r : train) by_key[{r.user, r.item}] = r;
  // User 1 in time order: 11 (t100, 3), 12 (t200, 4), 10 (t300, 5).
  const Row& r10 = by_key.at({1, 10});
  EXPECT_EQ(r10.label, 1);
  EXPECT_EQ(r10.cate, 2u);  // Action
  EXPECT_EQ(r10.hist_items, (std::vector<uint64_t>{11, 12}));
  EXPECT_EQ(r10.hist_cates, (std::vector<uint64_t>{9, 2}));  // Drama, Action
  EXPECT_EQ(by_key.at({1, 11}).label, 0);
  EXPECT_TRUE(by_key.at({1, 11}).hist_items.empty());
  EXPECT_EQ(by_key.at({1, 12}).hist_items, (std::vector<uint64_t>{11}));
  EXPECT_EQ(by_key.at({2, 12}).hist_items, (std::vector<uint64_t>{10}));
  EXPECT_EQ(by_key.at({2, 10}).label, 0);

  // --max-history keeps the newest.
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " +
                               dir / "out1 --test-fraction 0 --max-history 1")),
            0);
  for (auto& r : ReadRows(dir / "out1/train.tsv")) {
    if (r.user == 1 && r.item == 10) {
      EXPECT_EQ(r.hist_items, (std::vector<uint64_t>{12}));
    }
  }

  // All users to test.
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " + dir / "out2 --test-fraction 1")), 0);
  EXPECT_EQ(ReadRows(dir / "out2/test.tsv").size(), 6u);
  EXPECT_FALSE(std::filesystem::file_size(dir / "out2/train.tsv") > 0);

  // Missing input: a clear error and a non-zero exit.
  EXPECT_NE(RunCommand(Convert("movielens " + dir / "nothing " + dir / "out3") + " 2>/dev/null"),
            0);
}

TEST(ConvertTest, MovieLensLatestCsvWithCrlfAndQuotedTitles) {
  TempDir dir;
  std::string ratings = "userId,movieId,rating,timestamp\r\n";
  std::string movies = "movieId,title,genres\r\n";
  for (int m = 1; m <= 20; ++m)
    movies += std::to_string(m) + ",\"Movie, number " + std::to_string(m) + " (2000)\"," +
              (m % 2 ? "Comedy|Drama" : "Sci-Fi") + "\r\n";
  int n = 0;
  for (int u = 1; u <= 50; ++u)
    for (int k = 0; k < 1 + u % 6; ++k, ++n)
      ratings += std::to_string(u) + "," + std::to_string(1 + (u * 7 + k * 3) % 20) + "," +
                 (k % 3 ? "4.5" : "2.0") + "," + std::to_string(1000 + k * 10) + "\r\n";
  WriteFile(dir / "ml/ratings.csv", ratings);
  WriteFile(dir / "ml/movies.csv", movies);
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " + dir / "out --seed 3")), 0);
  auto train = ReadRows(dir / "out/train.tsv");
  auto test = ReadRows(dir / "out/test.tsv");
  EXPECT_EQ(train.size() + test.size(), static_cast<size_t>(n));
  std::set<uint64_t> train_users, test_users;
  for (auto& r : train) train_users.insert(r.user);
  for (auto& r : test) test_users.insert(r.user);
  for (uint64_t u : test_users) EXPECT_FALSE(train_users.count(u)) << "user in both splits";
  EXPECT_GT(test_users.size(), 2u);
  EXPECT_GT(train_users.size(), test_users.size());
  for (auto& r : train) {
    EXPECT_EQ(r.cate, r.item % 2 ? 6u : 17u);  // Comedy (first genre) or Sci-Fi
    EXPECT_EQ(r.hist_items.size(), r.hist_cates.size());
  }
  // Same seed, same bytes; another seed, another split.
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " + dir / "again --seed 3")), 0);
  EXPECT_EQ(ReadFile(dir / "out/train.tsv"), ReadFile(dir / "again/train.tsv"));
  ASSERT_EQ(RunCommand(Convert("movielens " + dir / "ml " + dir / "other --seed 4")), 0);
  EXPECT_NE(ReadFile(dir / "out/test.tsv"), ReadFile(dir / "other/test.tsv"));
}

TEST(ConvertTest, AmazonProtocol) {
  TempDir dir;
  // Reviews out of time order; user C has a single review (no samples).
  WriteFile(
      dir / "reviews.json",
      R"({"reviewerID": "A", "asin": "i2", "reviewText": "ok, \"fine\"", "overall": 5.0, "unixReviewTime": 200})"
      "\n"
      R"({"reviewerID": "A", "asin": "i1", "helpful": [0, 0], "unixReviewTime": 100})"
      "\n"
      R"({"reviewerID": "A", "asin": "i3", "unixReviewTime": 300})"
      "\n"
      R"({"reviewerID": "B", "asin": "i3", "unixReviewTime": 50})"
      "\n"
      R"({"reviewerID": "B", "asin": "i4", "unixReviewTime": 60})"
      "\n"
      R"({"reviewerID": "C", "asin": "i5", "unixReviewTime": 70})"
      "\n");
  WriteFile(dir / "meta.json",
            "{'asin': 'i1', 'title': \"Bob's\", 'categories': [['Electronics', 'Audio'], "
            "['Electronics', 'Cables']]}\n"
            "{'asin': 'i2', 'price': 3.5, 'related': {'also_bought': ['i1']}, 'categories': "
            "[['Books']]}\n"
            "{\"asin\": \"i3\", \"category\": [\"Home\", \"Kitchen\"]}\n"
            "{'asin': 'i4', 'salesRank': {'Books': 3}, 'categories': [['Books']], 'x': None}\n"
            "{'asin': 'i5', 'categories': [['Toys']], 'flag': True}\n");
  ASSERT_EQ(
      RunCommand(Convert("amazon " + dir / "reviews.json " + dir / "meta.json " + dir / "out")), 0);
  auto train = ReadRows(dir / "out/train.tsv");
  auto test = ReadRows(dir / "out/test.tsv");
  // Items i1..i5 -> 1..5; users A, B, C -> 1, 2, 3; categories sorted:
  // Books 1, Cables 2, Kitchen 3, Toys 4.
  // A: i1, i2, i3 -> train: pos/neg at i=1 (hist [i1]); test: pos/neg at i=2 (hist [i1,i2]).
  // B: i3, i4 -> test: pos/neg at i=1 (hist [i3]).
  ASSERT_EQ(train.size(), 2u);
  ASSERT_EQ(test.size(), 4u);
  for (const Row& r : train) {
    EXPECT_EQ(r.user, 1u);
    EXPECT_EQ(r.hist_items, (std::vector<uint64_t>{1}));
    EXPECT_EQ(r.hist_cates, (std::vector<uint64_t>{2}));
    if (r.label == 1) {
      EXPECT_EQ(r.item, 2u);
      EXPECT_EQ(r.cate, 1u);
    } else {
      EXPECT_TRUE(r.item == 4 || r.item == 5) << r.item;  // never reviewed by A
    }
  }
  int pos = 0;
  for (const Row& r : test) {
    pos += r.label;
    if (r.user == 1) {
      EXPECT_EQ(r.hist_items, (std::vector<uint64_t>{1, 2}));
      if (r.label) {
        EXPECT_EQ(r.item, 3u);
        EXPECT_EQ(r.cate, 3u);
      }
    } else {
      EXPECT_EQ(r.user, 2u);
      EXPECT_EQ(r.hist_items, (std::vector<uint64_t>{3}));
      if (r.label) {
        EXPECT_EQ(r.item, 4u);
      } else {
        EXPECT_NE(r.item, 3u);
        EXPECT_NE(r.item, 4u);
      }
    }
  }
  EXPECT_EQ(pos, 2);

  // A malformed metadata line is reported with its line number.
  WriteFile(dir / "bad_meta.json", "{'asin': 'i1', 'categories': [['A']]}\n{'asin': 'i2', \n");
  const std::string log = dir / "err.txt";
  EXPECT_NE(RunCommand(std::string(DIN_CONVERT_BIN) + " amazon " + dir / "reviews.json " +
                       dir / "bad_meta.json " + dir / "out2 > /dev/null 2> " + log),
            0);
  EXPECT_NE(ReadFile(log).find("bad_meta.json:2: "), std::string::npos) << ReadFile(log);
}

TEST(ConvertTest, RealMovieLensLatestSmall) {
  const std::string src = DIN_ML_LATEST_SMALL;
  if (!std::filesystem::exists(src + "/ratings.csv")) GTEST_SKIP() << src << " not present";
  TempDir dir;
  ASSERT_EQ(RunCommand(Convert("movielens " + src + " " + dir.path())), 0);
  auto train = ReadRows(dir / "train.tsv");
  auto test = ReadRows(dir / "test.tsv");
  EXPECT_EQ(train.size() + test.size(), 100836u);  // every rating is a row
  std::set<uint64_t> train_users, test_users;
  size_t pos = 0;
  for (auto& r : train) train_users.insert(r.user), pos += r.label;
  for (auto& r : test) test_users.insert(r.user), pos += r.label;
  EXPECT_EQ(train_users.size() + test_users.size(), 610u);
  for (uint64_t u : test_users) EXPECT_FALSE(train_users.count(u));
  EXPECT_NEAR(test_users.size() / 610.0, 0.2, 0.06);
  // 48580 ratings are >= 4 in ml-latest-small.
  EXPECT_EQ(pos, 48580u);
  for (auto& r : test) EXPECT_LE(r.hist_items.size(), 50u);
}

// Runs din_convert with `args`; returns its exit status, its stdout and stderr in *out, *err.
int ConvertCapture(const TempDir& dir, const std::string& args, std::string* out,
                   std::string* err) {
  const int rc = RunCommand(std::string(DIN_CONVERT_BIN) + " " + args + " > " + dir / "stdout" +
                            " 2> " + dir / "stderr");
  *out = ReadFile(dir / "stdout");
  *err = ReadFile(dir / "stderr");
  return rc;
}

TEST(ConvertTest, MovieLens1m) {
  TempDir dir;
  // UserID::MovieID::Rating::Timestamp; titles hold ':' and the genres a name not in the
  // fixed table.
  WriteFile(dir / "ml/ratings.dat",
            "1::10::5::300\n1::11::3::100\n\n1::12::4::200\n2::12::2::60\n2::10::4::50\n");
  WriteFile(dir / "ml/movies.dat",
            "10::Star Wars: Episode IV (1977)::Action|Adventure\n"
            "11::Toy Story (1995)::Children's|Comedy\n"
            "12::Odd: The Movie (2001)::Weird|Drama\n");
  std::string out, err;
  ASSERT_EQ(
      ConvertCapture(dir, "movielens " + dir / "ml " + dir / "out --test-fraction 0", &out, &err),
      0)
      << err;
  const Json summary = Json::parse(out.substr(out.rfind('{')), nullptr, false);
  EXPECT_EQ(summary.value("dataset", ""), "ml-1m") << out;
  EXPECT_EQ(summary.value("ratings", 0), 5) << out;
  EXPECT_EQ(summary.value("positives", 0), 3) << out;
  auto train = ReadRows(dir / "out/train.tsv");
  ASSERT_EQ(train.size(), 5u);
  std::map<std::pair<uint64_t, uint64_t>, Row> by_key;
  for (auto& r : train) by_key[{r.user, r.item}] = r;
  const uint64_t weird = 1000 + HashToken("Weird") % 1000000000ULL;
  // User 1 in time order: 11 (t100), 12 (t200), 10 (t300).
  const Row& r10 = by_key.at({1, 10});
  EXPECT_EQ(r10.label, 1);
  EXPECT_EQ(r10.cate, 2u);  // Action
  EXPECT_EQ(r10.hist_items, (std::vector<uint64_t>{11, 12}));
  EXPECT_EQ(r10.hist_cates, (std::vector<uint64_t>{5, weird}));  // Children's, Weird
  EXPECT_EQ(by_key.at({1, 12}).label, 1);
  EXPECT_EQ(by_key.at({2, 12}).label, 0);
  EXPECT_EQ(by_key.at({2, 12}).hist_items, (std::vector<uint64_t>{10}));
}

TEST(ConvertTest, MalformedMovieLensLinesNameFileLineAndColumns) {
  struct Case {
    std::string ratings_file, ratings, movies_file, movies, message;
  };
  const std::vector<Case> cases = {
      {"ratings.csv", "userId,movieId,rating,timestamp\n1,2,3\n", "movies.csv", "",
       "ratings.csv:2: expected userId,movieId,rating,timestamp"},
      {"ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n", "movies.csv",
       "movieId,title,genres\n2,Drama\n", "movies.csv:2: expected movieId,title,genres"},
      {"ratings.dat", "1::2::3::4\n1::2::x::4\n", "movies.dat", "",
       "ratings.dat:2: expected UserID::MovieID::Rating::Timestamp"},
      {"ratings.dat", "1::2::3::4\n", "movies.dat", "2::Title\n",
       "movies.dat:1: expected MovieID::Title::Genres"},
      {"u.data", "1\t2\t3\n", "u.item", "",
       "u.data:1: expected user<TAB>item<TAB>rating<TAB>timestamp"},
      {"u.data", "1\t2\t3\t4\n", "u.item", "2|Title|1995\n",
       "u.item:1: expected 24 '|'-separated fields (id|title|...|19 genre flags)"},
  };
  for (const Case& c : cases) {
    TempDir dir;
    WriteFile(dir / ("ml/" + c.ratings_file), c.ratings);
    WriteFile(dir / ("ml/" + c.movies_file), c.movies);
    std::string out, err;
    EXPECT_EQ(ConvertCapture(dir, "movielens " + dir / "ml " + dir / "out", &out, &err), 1);
    EXPECT_EQ(err, "din_convert: " + dir / ("ml/" + c.message) + "\n");
  }
  TempDir dir;
  std::string out, err;
  EXPECT_EQ(ConvertCapture(dir, "movielens " + dir / "empty " + dir / "out", &out, &err), 1);
  EXPECT_EQ(err, "din_convert: " + dir / "empty" + ": no ratings.csv, ratings.dat or u.data\n");
}

TEST(ConvertTest, UsageListsEveryCommandAndFormat) {
  TempDir dir;
  for (const std::string args : {"", "movielens", "movielens a b c", "amazon a b", "imdb a b"}) {
    std::string out, err;
    EXPECT_EQ(ConvertCapture(dir, args, &out, &err), 2) << args;
    EXPECT_EQ(err.rfind("usage: din_convert movielens DIR OUT | din_convert amazon REVIEWS META "
                        "OUT  [--seed N]",
                        0),
              0u)
        << err;
    for (const char* text :
         {"ml-latest", "ratings.csv", "movies.csv", "ml-1m", "ratings.dat", "movies.dat", "ml-100k",
          "u.data", "u.item", "UserID::MovieID::Rating::Timestamp", "unixReviewTime"})
      EXPECT_NE(err.find(text), std::string::npos) << text << " not in\n" << err;
  }
}

TEST(ConvertTest, BadFlagsAndOutputDirectory) {
  TempDir dir;
  WriteFile(dir / "ml/u.data", "1\t10\t5\t300\n");
  WriteFile(dir / "ml/u.item", "");
  std::string out, err;
  EXPECT_EQ(
      ConvertCapture(dir, "movielens " + dir / "ml " + dir / "out --test-fraction 1.5", &out, &err),
      1);
  EXPECT_EQ(err, "din_convert: --test-fraction must be in [0, 1]\n");
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
  // OUT below a regular file cannot be created.
  WriteFile(dir / "file", "x");
  EXPECT_EQ(ConvertCapture(dir, "movielens " + dir / "ml " + dir / "file/out", &out, &err), 1);
  EXPECT_EQ(err.rfind("din_convert: cannot create " + dir / "file/out" + ": ", 0), 0u) << err;
}

}  // namespace
}  // namespace din
