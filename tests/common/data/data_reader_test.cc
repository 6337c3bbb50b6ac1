// Reader: din-tsv parsing, every kind of bad input with its exact file:line message,
// schema-driven layouts, shuffling, epochs and position save/restore.
#include "common/data/reader.h"

#include <algorithm>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "common/hash.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::TempDir;
using test::WriteFile;

std::string Join(const IdColumn& col, size_t r) {
  std::string s;
  for (uint32_t k = col.begin(r); k < col.end(r); ++k) {
    if (k > col.begin(r)) s += ",";
    s += std::to_string(col.ids[k]);
  }
  return s;
}

// One sample as text: label|user-key|user fields|candidates|behaviours|contexts.
std::string RowText(const Batch& b, size_t r) {
  std::string s = std::to_string(static_cast<int>(b.labels[r])) + "|" + std::to_string(b.users[r]);
  for (const auto* group :
       {&b.user_fields, &b.candidate_fields, &b.behavior_fields, &b.context_fields})
    for (const auto& col : *group) s += "|" + Join(col, r);
  return s;
}

config::DataConfig Config(uint32_t batch_size = 4) {
  config::DataConfig cfg;
  cfg.set_batch_size(batch_size);
  cfg.set_shuffle_buffer(0);
  return cfg;
}

// Reads a whole epoch; rows as RowText.
Result<std::vector<std::string>> ReadAll(Reader* reader) {
  std::vector<std::string> rows;
  Batch batch;
  for (;;) {
    DIN_ASSIGN_OR_RETURN(bool more, reader->NextBatch(&batch));
    if (!more) break;
    for (size_t r = 0; r < batch.size; ++r) rows.push_back(RowText(batch, r));
  }
  return rows;
}

Result<std::vector<std::string>> ReadPath(const config::DataConfig& cfg, const std::string& path,
                                          int worker = 0, int workers = 1) {
  DIN_ASSIGN_OR_RETURN(auto reader, Reader::Open(cfg, {path, worker, workers, true}));
  return ReadAll(reader.get());
}

// The error message of reading `text` as a din-tsv file named f.tsv.
std::string ErrorOf(const std::string& text, config::DataConfig cfg = Config()) {
  TempDir dir;
  WriteFile(dir / "f.tsv", text);
  auto rows = ReadPath(cfg, dir / "f.tsv");
  if (rows.ok()) return "OK";
  const std::string& m = rows.status().message();
  // Strip the directory so tests compare "f.tsv:LINE: reason".
  const size_t at = m.find("f.tsv");
  return at == std::string::npos ? m : m.substr(at);
}

TEST(ReaderTest, ParsesDinTsv) {
  TempDir dir;
  WriteFile(dir / "a.tsv",
            "1\t7\t100\t5\t1,2,3\t4,5,6\n"
            "0\t8\t101\t6\t\t\n"
            "1\t9\t18446744073709551615\t0\t42\t43\n");
  auto reader = Reader::Open(Config(2), {dir / "a.tsv"});
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  Batch batch;
  auto more = (*reader)->NextBatch(&batch);
  ASSERT_TRUE(more.ok() && *more);
  ASSERT_EQ(batch.size, 2u);
  EXPECT_EQ(batch.labels, (std::vector<float>{1, 0}));
  EXPECT_EQ(batch.users, (std::vector<uint64_t>{7, 8}));
  ASSERT_EQ(batch.user_fields.size(), 1u);
  ASSERT_EQ(batch.candidate_fields.size(), 2u);
  ASSERT_EQ(batch.behavior_fields.size(), 2u);
  EXPECT_TRUE(batch.context_fields.empty());
  EXPECT_EQ(batch.candidate_fields[0].ids, (std::vector<uint64_t>{100, 101}));
  EXPECT_EQ(batch.candidate_fields[1].ids, (std::vector<uint64_t>{5, 6}));
  EXPECT_EQ(batch.behavior_fields[0].ids, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(batch.behavior_fields[0].offsets, (std::vector<uint32_t>{0, 3, 3}));
  EXPECT_EQ(batch.behavior_fields[1].ids, (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_EQ(batch.behavior_fields[1].offsets, (std::vector<uint32_t>{0, 3, 3}));
  more = (*reader)->NextBatch(&batch);
  ASSERT_TRUE(more.ok() && *more);
  ASSERT_EQ(batch.size, 1u);
  EXPECT_EQ(batch.candidate_fields[0].ids[0], 18446744073709551615ULL);
  more = (*reader)->NextBatch(&batch);
  ASSERT_TRUE(more.ok());
  EXPECT_FALSE(*more);
  EXPECT_EQ(batch.size, 0u);
  EXPECT_EQ((*reader)->schema().Tables(), (std::vector<std::string>{"user", "item", "cate"}));
}

TEST(ReaderTest, CrlfAndFinalLineWithoutNewlineAndBlankLines) {
  TempDir dir;
  WriteFile(dir / "a.tsv", "1\t7\t100\t5\t1,2\t4,5\r\n\r\n0\t8\t101\t6\t3\t7");
  auto rows = ReadPath(Config(), dir / "a.tsv");
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(*rows, (std::vector<std::string>{"1|7|7|100|5|1,2|4,5", "0|8|8|101|6|3|7"}));
}

TEST(ReaderTest, KeepsNewestMaxHistory) {
  TempDir dir;
  WriteFile(dir / "a.tsv", "1\t7\t100\t5\t1,2,3,4\t11,12,13,14\n");
  auto cfg = Config();
  cfg.set_max_history(2);
  auto rows = ReadPath(cfg, dir / "a.tsv");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(*rows, (std::vector<std::string>{"1|7|7|100|5|3,4|13,14"}));
}

TEST(ReaderTest, WrongColumnCount) {
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1\t4\n0\t7\t100\t5\t1\n"), "f.tsv:2: expected 6 columns, got 5");
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1\t4\t9\n"), "f.tsv:1: expected 6 columns, got 7");
}

TEST(ReaderTest, NonNumericAndOutOfRangeIds) {
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1\t4\n1\tx7\t100\t5\t1\t4\n"),
            "f.tsv:2: column 2 (user): 'x7' is not an unsigned decimal ID");
  EXPECT_EQ(ErrorOf("1\t7\t-100\t5\t1\t4\n"),
            "f.tsv:1: column 3 (item): '-100' is not an unsigned decimal ID");
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1,2a\t4,5\n"),
            "f.tsv:1: column 5 (hist_items): '2a' is not an unsigned decimal ID");
  EXPECT_EQ(ErrorOf("1\t7\t18446744073709551616\t5\t1\t4\n"),
            "f.tsv:1: column 3 (item): '18446744073709551616' is out of the unsigned 64-bit "
            "range");
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1\t99999999999999999999999\n"),
            "f.tsv:1: column 6 (hist_cates): '99999999999999999999999' is out of the unsigned "
            "64-bit range");
  EXPECT_EQ(ErrorOf("1\t7\t\t5\t1\t4\n"), "f.tsv:1: column 3 (item): empty ID");
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1,,2\t4,5,6\n"),
            "f.tsv:1: column 5 (hist_items): empty ID in the list");
}

TEST(ReaderTest, LabelNotZeroOrOne) {
  EXPECT_EQ(ErrorOf("2\t7\t100\t5\t1\t4\n"), "f.tsv:1: column 1 (label): must be 0 or 1, got '2'");
  EXPECT_EQ(ErrorOf("0\t7\t100\t5\t1\t4\n1.0\t7\t100\t5\t1\t4\n"),
            "f.tsv:2: column 1 (label): must be 0 or 1, got '1.0'");
}

TEST(ReaderTest, UnequalBehaviourLists) {
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1,2,3\t4,5\n"),
            "f.tsv:1: behaviour lists of unequal length: hist_items has 3, hist_cates has 2");
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t\t4\n"),
            "f.tsv:1: behaviour lists of unequal length: hist_items has 0, hist_cates has 1");
}

TEST(ReaderTest, OverLongLine) {
  auto cfg = Config();
  cfg.set_max_line_bytes(17);
  // 17 bytes + CRLF is fine (the limit excludes the line break); 19 bytes are not.
  EXPECT_EQ(ErrorOf("1\t7\t100\t5\t1,2\t4,5\r\n1\t7\t100\t5\t1,22\t4,55\n", cfg),
            "f.tsv:2: line longer than max_line_bytes (17)");
  // Longer than the whole read buffer, without any line break, in the middle.
  cfg.set_max_line_bytes(100);
  cfg.set_max_bad_lines(1);
  TempDir dir;
  WriteFile(dir / "f.tsv",
            "1\t7\t100\t5\t1\t4\n" + std::string(9 << 20, '7') + "\n0\t8\t101\t6\t\t\n");
  auto reader = Reader::Open(cfg, {dir / "f.tsv"});
  ASSERT_TRUE(reader.ok());
  auto rows = ReadAll(reader->get());
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(rows->size(), 2u);
  EXPECT_EQ((*reader)->bad_lines(), 1u);
  ASSERT_EQ((*reader)->bad_line_messages().size(), 1u);
  EXPECT_NE((*reader)->bad_line_messages()[0].find("f.tsv:2: line longer than"), std::string::npos);
}

TEST(ReaderTest, EmptyMissingAndEmptyDirectory) {
  TempDir dir;
  WriteFile(dir / "empty.tsv", "");
  auto r = Reader::Open(Config(), {dir / "empty.tsv"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), dir / "empty.tsv" + ": file is empty");
  r = Reader::Open(Config(), {dir / "missing.tsv"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), dir / "missing.tsv" + ": no such file or directory");
  std::filesystem::create_directories(dir / "d");
  WriteFile(dir / "d/_SUCCESS", "x");
  WriteFile(dir / "d/part-0", "");
  r = Reader::Open(Config(), {dir / "d"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), dir / "d" + ": directory has no non-empty data files");
}

// Line numbers are counted in the file the bad line is in, also when bad lines of
// several files follow each other (the counting keeps the last file open).
TEST(ReaderTest, BadLineNumbersAcrossFiles) {
  auto lines = [](std::initializer_list<const char*> parts) {
    std::string s;
    for (const char* p : parts) s.append(p).push_back('\n');
    return s;
  };
  const char* good = "1\t7\t100\t5\t1\t4";
  TempDir dir;
  std::filesystem::create_directories(dir / "d");
  WriteFile(dir / "d/a.tsv", lines({good, good, "x", good, "y"}));
  WriteFile(dir / "d/b.tsv", lines({"z", "w", good, "v"}));
  auto cfg = Config();
  cfg.set_max_bad_lines(10);
  auto reader = Reader::Open(cfg, {dir / "d", 0, 1, false});
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  auto rows = ReadAll(reader->get());
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 4u);
  const auto& messages = (*reader)->bad_line_messages();
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_EQ(messages[0].substr(0, messages[0].find(": ")), dir / "d/a.tsv" + ":3");
  EXPECT_EQ(messages[1].substr(0, messages[1].find(": ")), dir / "d/a.tsv" + ":5");
  EXPECT_EQ(messages[2].substr(0, messages[2].find(": ")), dir / "d/b.tsv" + ":1");
  EXPECT_EQ(messages[3].substr(0, messages[3].find(": ")), dir / "d/b.tsv" + ":2");
  EXPECT_EQ(messages[4].substr(0, messages[4].find(": ")), dir / "d/b.tsv" + ":4");
}

TEST(ReaderTest, SkipsUpToMaxBadLinesAndCounts) {
  const std::string text =
      "1\t7\t100\t5\t1\t4\n"
      "x\t7\t100\t5\t1\t4\n"
      "1\t7\t100\t5\t1\t4\n"
      "1\t7\t100\t5\n"
      "0\t8\t100\t5\t1\t4\n";
  TempDir dir;
  WriteFile(dir / "f.tsv", text);
  auto cfg = Config();
  cfg.set_max_bad_lines(2);
  auto reader = Reader::Open(cfg, {dir / "f.tsv"});
  ASSERT_TRUE(reader.ok());
  auto rows = ReadAll(reader->get());
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->size(), 3u);
  EXPECT_EQ((*reader)->bad_lines(), 2u);
  ASSERT_EQ((*reader)->bad_line_messages().size(), 2u);
  EXPECT_EQ((*reader)->bad_line_messages()[0],
            dir / "f.tsv" + ":2: column 1 (label): must be 0 or 1, got 'x'");
  EXPECT_EQ((*reader)->bad_line_messages()[1], dir / "f.tsv" + ":4: expected 6 columns, got 4");
  cfg.set_max_bad_lines(1);
  EXPECT_EQ(ErrorOf(text, cfg),
            "f.tsv:4: expected 6 columns, got 4 (more than max_bad_lines=1 malformed lines)");
}

// A byte-range partition that starts mid-file still reports the file's line numbers.
TEST(ReaderTest, LineNumbersExactInByteRangePartitions) {
  std::string text;
  for (int i = 1; i <= 300; ++i)
    text += (i == 277 ? "7" : "1") + std::string("\t") + std::to_string(i) + "\t100\t5\t1,2\t3,4\n";
  TempDir dir;
  WriteFile(dir / "f.tsv", text);
  bool seen = false;
  for (int w = 0; w < 3; ++w) {
    auto rows = ReadPath(Config(), dir / "f.tsv", w, 3);
    if (rows.ok()) continue;
    seen = true;
    EXPECT_EQ(rows.status().message(),
              dir / "f.tsv" + ":277: column 1 (label): must be 0 or 1, got '7'");
    EXPECT_EQ(w, 2);
  }
  EXPECT_TRUE(seen);
}

TEST(ReaderTest, SchemaLayoutWithHashMultiValuedAndContext) {
  config::DataConfig cfg = Config(8);
  cfg.set_format(config::DataConfig::SCHEMA);
  cfg.set_label_column(2);
  cfg.set_group_field("uid");
  auto add = [&](const char* name, uint32_t column, config::FieldConfig::Kind kind) {
    auto* f = cfg.add_fields();
    f->set_name(name);
    f->set_column(column);
    f->set_kind(kind);
    return f;
  };
  add("uid", 0, config::FieldConfig::USER)->set_hash(true);
  auto* tags = add("tags", 1, config::FieldConfig::USER);
  tags->set_multi_valued(true);
  tags->set_separator("|");
  add("ad", 3, config::FieldConfig::CANDIDATE)->set_table("item");
  add("hist", 4, config::FieldConfig::BEHAVIOR)->set_aligned_with("ad");
  add("hour", 5, config::FieldConfig::CONTEXT);
  cfg.set_num_columns(7);  // column 6 is ignored
  TempDir dir;
  WriteFile(dir / "f.csv", "alice\t1|2\t1\t10\t8,9\t13\tjunk\nbob\t\t0\t11\t\t14\t\n");
  auto rows = ReadPath(cfg, dir / "f.csv");
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  const std::string alice = std::to_string(HashToken("alice"));
  const std::string bob = std::to_string(HashToken("bob"));
  EXPECT_EQ(*rows, (std::vector<std::string>{"1|" + alice + "|" + alice + "|1,2|10|8,9|13",
                                             "0|" + bob + "|" + bob + "||11||14"}));
  auto schema = Schema::FromConfig(cfg);
  ASSERT_TRUE(schema.ok());
  EXPECT_EQ(schema->Tables(), (std::vector<std::string>{"uid", "tags", "item", "hour"}));
  EXPECT_EQ(schema->behaviors()[0].table, "item");
}

// The example layout documented in data_config.proto.
TEST(ReaderTest, DocumentedSchemaExample) {
  config::DataConfig cfg;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(
        format: SCHEMA
        label_column: 0
        group_field: "uid"
        fields { name: "uid" column: 1 kind: USER hash: true }
        fields { name: "profile" column: 2 kind: USER multi_valued: true separator: "|" }
        fields { name: "item" column: 3 kind: CANDIDATE }
        fields { name: "shop" column: 4 kind: CANDIDATE }
        fields { name: "hist_items" column: 5 kind: BEHAVIOR aligned_with: "item" }
        fields { name: "hist_shops" column: 6 kind: BEHAVIOR aligned_with: "shop" }
        fields { name: "hour" column: 7 kind: CONTEXT }
      )pb",
      &cfg));
  cfg.set_shuffle_buffer(0);
  TempDir dir;
  WriteFile(dir / "f.tsv", "1\tu1\t3|40\t7\t8\t1,2\t5,6\t13\n");
  auto rows = ReadPath(cfg, dir / "f.tsv");
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  const std::string u1 = std::to_string(HashToken("u1"));
  EXPECT_EQ(*rows, (std::vector<std::string>{"1|" + u1 + "|" + u1 + "|3,40|7|8|1,2|5,6|13"}));
}

TEST(ReaderTest, SchemaValidation) {
  config::DataConfig cfg;
  cfg.add_fields()->set_name("x");
  EXPECT_FALSE(Schema::FromConfig(cfg).ok());  // fields with format DIN_TSV
  cfg.set_format(config::DataConfig::SCHEMA);
  cfg.mutable_fields(0)->set_column(1);
  cfg.mutable_fields(0)->set_kind(config::FieldConfig::CANDIDATE);
  auto s = Schema::FromConfig(cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("has no behaviour field"), std::string::npos);
  auto* b = cfg.add_fields();
  b->set_name("hx");
  b->set_column(0);  // the label's column
  b->set_kind(config::FieldConfig::BEHAVIOR);
  b->set_aligned_with("x");
  s = Schema::FromConfig(cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("already used"), std::string::npos);
  b->set_column(2);
  cfg.set_group_field("");
  EXPECT_TRUE(Schema::FromConfig(cfg).ok());
  EXPECT_TRUE(ValidateDataConfig(cfg).ok());
  cfg.set_batch_size(0);
  EXPECT_EQ(ValidateDataConfig(cfg).message(), "data: batch_size must be > 0");
  EXPECT_TRUE(ValidateDataConfig(config::DataConfig()).ok());
}

std::string Lines(int n, int tag) {
  std::string text;
  for (int i = 0; i < n; ++i)
    text += std::to_string(i % 2) + "\t" + std::to_string(tag * 100000 + i) + "\t" +
            std::to_string(i) + "\t" + std::to_string(i % 7) + "\t" + std::to_string(i + 1) + "\t" +
            std::to_string(i % 5) + "\n";
  return text;
}

TEST(ReaderTest, ShuffleIsDeterministicAndCoversEveryLineEachEpoch) {
  TempDir dir;
  WriteFile(dir / "f.tsv", Lines(1000, 1));
  auto cfg = Config(64);
  auto plain = ReadPath(cfg, dir / "f.tsv");
  ASSERT_TRUE(plain.ok());
  cfg.set_shuffle_buffer(100);
  cfg.set_seed(5);
  auto open = [&] { return std::move(Reader::Open(cfg, {dir / "f.tsv"})).value(); };
  auto r1 = open(), r2 = open();
  auto e0 = ReadAll(r1.get());
  auto e0b = ReadAll(r2.get());
  ASSERT_TRUE(e0.ok() && e0b.ok());
  EXPECT_EQ(*e0, *e0b);
  EXPECT_NE(*e0, *plain);
  r1->StartNextEpoch();
  auto e1 = ReadAll(r1.get());
  ASSERT_TRUE(e1.ok());
  EXPECT_NE(*e0, *e1);
  EXPECT_EQ(r1->epoch(), 1u);
  for (auto* e : {&*e0, &*e1}) {
    std::vector<std::string> sorted = *e, want = *plain;
    std::sort(sorted.begin(), sorted.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(sorted, want);
  }
  cfg.set_seed(6);
  auto r3 = open();
  auto other = ReadAll(r3.get());
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, *e0);
}

// Restoring a saved position yields the same subsequent batches, for every cut point,
// with and without shuffling, whole files and byte ranges, across an epoch boundary.
TEST(ReaderTest, SaveRestoreYieldsSameBatches) {
  TempDir dir;
  WriteFile(dir / "d/a.tsv", Lines(300, 1));
  WriteFile(dir / "d/b.tsv", Lines(170, 2));
  for (uint32_t shuffle : {0u, 64u}) {
    for (int workers : {1, 2}) {
      auto cfg = Config(16);
      cfg.set_shuffle_buffer(shuffle);
      cfg.set_seed(11);
      for (int cut = 0; cut < 40; cut += 3) {
        auto a = std::move(Reader::Open(cfg, {dir / "d", 0, workers})).value();
        Batch batch;
        int taken = 0;
        // Read `cut` batches (crossing into epoch 1 when the epoch is short).
        while (taken < cut) {
          auto more = a->NextBatch(&batch);
          ASSERT_TRUE(more.ok());
          if (!*more) a->StartNextEpoch();
          ++taken;
        }
        const std::string state = a->SaveState();
        auto b = std::move(Reader::Open(cfg, {dir / "d", 0, workers})).value();
        ASSERT_TRUE(b->RestoreState(state).ok());
        EXPECT_EQ(b->epoch(), a->epoch());
        for (int k = 0; k < 25; ++k) {
          Batch x, y;
          auto mx = a->NextBatch(&x), my = b->NextBatch(&y);
          ASSERT_TRUE(mx.ok() && my.ok());
          ASSERT_EQ(*mx, *my);
          ASSERT_EQ(x.size, y.size);
          for (size_t r = 0; r < x.size; ++r)
            ASSERT_EQ(RowText(x, r), RowText(y, r)) << "shuffle " << shuffle << " cut " << cut;
          if (!*mx) {
            a->StartNextEpoch();
            b->StartNextEpoch();
          }
        }
      }
      // A state from another partition is refused.
      auto a = std::move(Reader::Open(cfg, {dir / "d", 0, workers})).value();
      auto c = std::move(Reader::Open(cfg, {dir / "d", 0, workers + 1})).value();
      EXPECT_FALSE(c->RestoreState(a->SaveState()).ok());
    }
  }
}

// samples_in_epoch survives save/restore when a shuffle block starts in the middle of a
// batch (blocks of 64, batches of 10).
TEST(ReaderTest, SaveRestoreKeepsSamplesInEpoch) {
  TempDir dir;
  WriteFile(dir / "f.tsv", Lines(300, 1));
  auto cfg = Config(10);
  cfg.set_shuffle_buffer(64);
  for (int cut = 1; cut < 30; ++cut) {
    auto a = std::move(Reader::Open(cfg, {dir / "f.tsv"})).value();
    Batch batch;
    for (int t = 0; t < cut; ++t) ASSERT_TRUE(a->NextBatch(&batch).ok());
    EXPECT_EQ(a->samples_in_epoch(), std::min(300u, 10u * cut));
    auto b = std::move(Reader::Open(cfg, {dir / "f.tsv"})).value();
    ASSERT_TRUE(b->RestoreState(a->SaveState()).ok());
    EXPECT_EQ(b->samples_in_epoch(), a->samples_in_epoch()) << "cut " << cut;
  }
}

// A partition reader (one part: the whole file) reads what Reader does. NextSamples
// appends a given number of samples; a small initial line buffer grows for long lines
// and still refuses lines over max_line_bytes.
TEST(ReaderTest, NextSamplesAndSmallGrowingLineBuffer) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) {
    std::string hist;
    for (int j = 0; j < i % 60; ++j) hist += (j ? "," : "") + std::to_string(1000000 + j);
    text += "1\t" + std::to_string(i) + "\t5\t6\t" + hist + "\t" + hist + "\n";
  }
  text += "1\t7\t100\t5\t" + std::string(5000, '7') + "\t7\n0\t8\t101\t6\t\t\n";
  WriteFile(dir / "f.tsv", text);
  auto cfg = Config(16);
  cfg.set_max_line_bytes(1000);
  cfg.set_max_bad_lines(1);
  auto want = ReadPath(cfg, dir / "f.tsv");
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_EQ(want->size(), 201u);
  Reader::PartitionOptions options;
  options.files = std::make_shared<const std::vector<InputFile>>(
      std::move(ListInputFiles(dir / "f.tsv")).value());
  options.read_buffer_bytes = 100;
  auto reader = std::move(Reader::OpenPartition(cfg, options)).value();
  std::vector<std::string> rows;
  Batch batch;
  reader->schema().PrepareBatch(&batch);
  for (size_t take : {0, 1, 7, 150, 100, 5}) {
    const size_t before = batch.size;
    auto n = reader->NextSamples(&batch, take);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(*n, std::min(take, 201 - before));
    EXPECT_EQ(batch.size, before + *n);
  }
  for (size_t r = 0; r < batch.size; ++r) rows.push_back(RowText(batch, r));
  EXPECT_EQ(rows, *want);
  EXPECT_EQ(reader->samples_in_epoch(), 201u);
  EXPECT_EQ(reader->bad_lines(), 1u);
  ASSERT_EQ(reader->bad_line_messages().size(), 1u);
  EXPECT_NE(reader->bad_line_messages()[0].find("f.tsv:201: line longer than max_line_bytes"),
            std::string::npos);
}

}  // namespace
}  // namespace din
