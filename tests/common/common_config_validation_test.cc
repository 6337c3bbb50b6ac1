// ValidateConfig and config parsing (common/config.h): one case per rule, each asserting
// that the message names the config file and the offending field.
#include "common/config.h"

#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/config_override.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

// The din-tsv tables and a data section: a valid training config to break one rule of.
constexpr char kTables[] = R"pb(
  tables { name: "user" dim: 8 }
  tables { name: "item" dim: 8 shards: 2 }
  tables { name: "cate" dim: 4 }
  data { train_path: "/data/train.tsv" }
)pb";

// The message of ParseConfig(text) as "config job.pbtxt: ..."; "" when accepted.
std::string ErrorOf(const std::string& text) {
  auto cfg = ParseConfig(text, "job.pbtxt");
  if (cfg.ok()) return "";
  EXPECT_EQ(cfg.status().code(), StatusCode::kInvalidArgument);
  return cfg.status().message();
}

// The din-tsv tables and a data section, with `fields` added to the body of table "user".
std::string WithUser(const std::string& fields) {
  return "tables { name: \"user\" dim: 8 " + fields + " }\n" +
         "tables { name: \"item\" dim: 8 }\ntables { name: \"cate\" dim: 4 }\n" +
         "data { train_path: \"/data/train.tsv\" }\n";
}

void ExpectError(const std::string& text, const std::string& expected) {
  EXPECT_EQ(ErrorOf(text), expected) << text;
}

TEST(ConfigValidationTest, ValidConfigIsAccepted) {
  EXPECT_EQ(ErrorOf(kTables), "");
  auto cfg = ParseConfig(kTables, "job.pbtxt");
  ASSERT_TRUE(cfg.ok());
  // No optimizer: adagrad with its defaults is filled in.
  EXPECT_TRUE(cfg->tables(0).optimizer().has_adagrad());
}

TEST(ConfigValidationTest, UnknownFieldNamesFileLineAndColumn) {
  const std::string err = ErrorOf("tables {\n  name: \"user\"\n  dimm: 8\n}\n");
  EXPECT_NE(err.find("cannot parse config job.pbtxt"), std::string::npos) << err;
  // Line 3, and the column where the parser stands (after the name, in protobuf's parser).
  EXPECT_THAT(err, ::testing::ContainsRegex("job\\.pbtxt:3:[0-9]+: .*no field named \"dimm\""));
}

TEST(ConfigValidationTest, SyntaxErrorsAndBadValuesNameTheirPosition) {
  // A negative dim does not parse (dim is unsigned): the position is given.
  std::string err = ErrorOf("tables { name: \"user\"\n dim: -4 }\n");
  EXPECT_NE(err.find("job.pbtxt:2:"), std::string::npos) << err;
  err = ErrorOf("tables { name: \"user\" dim: 8\n");
  EXPECT_NE(err.find("job.pbtxt:2:"), std::string::npos) << err;
  err = ErrorOf("tables { name: \"user\" dim: 8 when_full: DROP }");
  EXPECT_NE(err.find("job.pbtxt:1:"), std::string::npos) << err;
  EXPECT_NE(err.find("DROP"), std::string::npos) << err;
}

TEST(ConfigValidationTest, Tables) {
  ExpectError("ps { request_timeout_ms: 10 }", "config job.pbtxt: no tables declared");
  ExpectError("tables { dim: 8 }", "config job.pbtxt: tables[0]: name is required");
  ExpectError(WithUser("") + "tables { name: \"user\" dim: 4 }",
              "config job.pbtxt: tables[3] (user): duplicate table name");
  ExpectError("tables { name: \"user\" }",
              "config job.pbtxt: tables[0] (user): dim must be in 1..4096, got 0");
  ExpectError("tables { name: \"user\" dim: 4097 }",
              "config job.pbtxt: tables[0] (user): dim must be in 1..4096, got 4097");
  ExpectError(WithUser("shards: 0"),
              "config job.pbtxt: tables[0] (user): shards must be in 1..65536, got 0");
  ExpectError(WithUser("shards: 65537"),
              "config job.pbtxt: tables[0] (user): shards must be in 1..65536, got 65537");
  ExpectError(WithUser("mba_lambda: -0.5"),
              "config job.pbtxt: tables[0] (user): mba_lambda must be >= 0, got -0.5");
  ExpectError(WithUser("initializer { stddev: -1 }"),
              "config job.pbtxt: tables[0] (user): initializer.stddev must be >= 0, got -1");
  ExpectError(WithUser("dump_format: TEXT dump_counts: true"),
              "config job.pbtxt: tables[0] (user): dump_counts needs dump_format: NPY (text "
              "dumps have no counts)");
}

TEST(ConfigValidationTest, DataFieldsReadDeclaredTables) {
  // din-tsv reads user, item and cate.
  ExpectError(
      "tables { name: \"user\" dim: 8 }\ntables { name: \"item\" dim: 8 }\n"
      "data { train_path: \"t\" }",
      "config job.pbtxt: data: din-tsv field 'cate': reads table 'cate', which the "
      "config does not declare (tables { name: \"cate\" ... })");
  // A schema field reads its `table`, or the table of its own name.
  const std::string schema = R"pb(
    tables { name: "user" dim: 8 }
    tables { name: "item" dim: 8 }
    data {
      format: SCHEMA
      fields { name: "user" column: 1 kind: USER }
      fields { name: "item" column: 2 kind: CANDIDATE }
      fields { name: "hist" column: 3 kind: BEHAVIOR aligned_with: "item" }
      fields { name: "hour" column: 4 kind: CONTEXT table: "hours" }
    }
  )pb";
  ExpectError(schema,
              "config job.pbtxt: data.fields[3] (hour): reads table 'hours', which the config "
              "does not declare (tables { name: \"hours\" ... })");
  EXPECT_EQ(ErrorOf(schema + "tables { name: \"hours\" dim: 2 }"), "");
  ExpectError(
      "tables { name: \"user\" dim: 8 }\n"
      "data { train_path: \"t\" fields { name: \"user\" column: 1 } }",
      "config job.pbtxt: data: fields are given but format is DIN_TSV; set format: "
      "SCHEMA to use them");
  // A config without a data section (servers-only tests and tools) is not checked.
  EXPECT_EQ(ErrorOf("tables { name: \"emb\" dim: 8 }"), "");
}

TEST(ConfigValidationTest, Optimizers) {
  const std::string t = "config job.pbtxt: tables[0] (user): ";
  ExpectError(WithUser("optimizer {}"),
              t + "optimizer names no kind: write optimizer { sgd {...} }, adagrad, "
                  "rowwise_adagrad, adam or ftrl (or leave optimizer out for adagrad with its "
                  "defaults)");
  // A kind with its defaults is fine.
  for (const char* kind : {"sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"})
    EXPECT_EQ(ErrorOf(WithUser(std::string("optimizer { ") + kind + " {} }")), "") << kind;
  ExpectError(WithUser("optimizer { sgd { learning_rate: 0 } }"),
              t + "optimizer.sgd.learning_rate must be > 0, got 0");
  ExpectError(WithUser("optimizer { sgd { learning_rate: nan } }"),
              t + "optimizer.sgd.learning_rate must be > 0, got nan");
  ExpectError(WithUser("optimizer { sgd { learning_rate: inf } }"),
              t + "optimizer.sgd.learning_rate must be > 0, got inf");
  ExpectError(WithUser("optimizer { adagrad { learning_rate: -0.1 } }"),
              t + "optimizer.adagrad.learning_rate must be > 0, got -0.1");
  ExpectError(WithUser("optimizer { adagrad { initial_accumulator: -1 } }"),
              t + "optimizer.adagrad.initial_accumulator must be >= 0, got -1");
  ExpectError(WithUser("optimizer { adagrad { initial_accumulator: 0 epsilon: 0 } }"),
              t + "optimizer.adagrad.initial_accumulator and optimizer.adagrad.epsilon are both "
                  "0 (a zero gradient would divide by zero)");
  ExpectError(WithUser("optimizer { rowwise_adagrad { learning_rate: 0 } }"),
              t + "optimizer.rowwise_adagrad.learning_rate must be > 0, got 0");
  ExpectError(WithUser("optimizer { rowwise_adagrad { epsilon: -1 } }"),
              t + "optimizer.rowwise_adagrad.epsilon must be >= 0, got -1");
  ExpectError(WithUser("optimizer { rowwise_adagrad { initial_accumulator: 0 epsilon: 0 } }"),
              t + "optimizer.rowwise_adagrad.initial_accumulator and "
                  "optimizer.rowwise_adagrad.epsilon are both 0 (a zero gradient would divide by "
                  "zero)");
  ExpectError(WithUser("optimizer { adam { beta1: 1 } }"),
              t + "optimizer.adam.beta1 must be in [0, 1), got 1");
  ExpectError(WithUser("optimizer { adam { beta2: -0.1 } }"),
              t + "optimizer.adam.beta2 must be in [0, 1), got -0.1");
  ExpectError(WithUser("optimizer { adam { epsilon: 0 } }"),
              t + "optimizer.adam.epsilon must be > 0, got 0");
  ExpectError(WithUser("optimizer { adam { learning_rate: 0 } }"),
              t + "optimizer.adam.learning_rate must be > 0, got 0");
  ExpectError(WithUser("optimizer { ftrl { alpha: 0 } }"),
              t + "optimizer.ftrl.alpha must be > 0, got 0");
  ExpectError(WithUser("optimizer { ftrl { l1: -1 } }"),
              t + "optimizer.ftrl.l1 must be >= 0, got -1");
}

TEST(ConfigValidationTest, MemoryCap) {
  const std::string t = "config job.pbtxt: tables[0] (user): ";
  EXPECT_EQ(ErrorOf(WithUser("max_rows_per_shard: 1000")), "");
  EXPECT_EQ(ErrorOf(WithUser("max_rows_per_shard: 1000 when_full: SKIP_NEW "
                             "expected_rows_per_shard: 1000")),
            "");
  // Without a row cap when_full still applies when the server's memory budget is reached.
  EXPECT_EQ(ErrorOf(WithUser("when_full: SKIP_NEW")), "");
  ExpectError(WithUser("max_rows_per_shard: 1000 expected_rows_per_shard: 5000"),
              t + "expected_rows_per_shard (5000) exceeds max_rows_per_shard (1000)");
  // Eviction needs the cap it evicts at.
  EXPECT_EQ(ErrorOf(WithUser("max_rows_per_shard: 1000 when_full: EVICT_LFU")), "");
  ExpectError(WithUser("when_full: EVICT_LRU"),
              t + "when_full: EVICT_LRU needs max_rows_per_shard > 0 (the cap it evicts at)");
  ExpectError(WithUser("max_rows_per_shard: 268435456"),
              t + "max_rows_per_shard must be at most 268435455 (the most one shard can hold), "
                  "got 268435456; use more shards");
}

TEST(ConfigValidationTest, Admission) {
  const std::string t = "config job.pbtxt: tables[0] (user): ";
  EXPECT_EQ(ErrorOf(WithUser("admission { min_count: 5 default_row: SHARED }")), "");
  EXPECT_EQ(ErrorOf(WithUser("admission { min_count: 5 }") + "trainer { mba_mode: PREPASS }"), "");
  // ONLINE admission counts in a sketch.
  EXPECT_EQ(ErrorOf(WithUser("admission { min_count: 5 sketch_bytes: 4096 sketch_depth: 2 }") +
                    "trainer { mba_mode: ONLINE }"),
            "");
  EXPECT_EQ(ErrorOf(WithUser("admission { min_count: 1 }") + "trainer { mba_mode: ONLINE }"), "");
  ExpectError(WithUser("admission { sketch_depth: 17 }"),
              t + "admission.sketch_depth must be in 1..16, got 17");
  ExpectError(WithUser("admission { sketch_depth: 4 sketch_bytes: 15 }"),
              t + "admission.sketch_bytes must be in 16..2^40 (4 bytes per counter, "
                  "sketch_depth rows), got 15");
  ExpectError(WithUser("admission { probability: 0 }"),
              t + "admission.probability must be in (0, 1], got 0.000000");
  ExpectError(WithUser("admission { probability: 1.5 }"),
              t + "admission.probability must be in (0, 1], got 1.500000");
  ExpectError(WithUser("admission { min_count: 1073741825 }"),
              t + "admission.min_count must be at most 2^30, got 1073741825");
}

TEST(ConfigValidationTest, PsModelTrainerCheckpointSecurity) {
  const std::string c = std::string(kTables);
  ExpectError(c + "ps { interface: \"\" }", "config job.pbtxt: ps: interface must not be empty");
  ExpectError(c + "ps { request_timeout_ms: 0 }",
              "config job.pbtxt: ps: request_timeout_ms must be > 0");
  ExpectError(c + "ps { max_request_keys: 0 }",
              "config job.pbtxt: ps: max_request_keys must be > 0");
  ExpectError(c + "model { top_hidden: [200, 0] }",
              "config job.pbtxt: model: top_hidden sizes must be >= 1, got 0");
  ExpectError(c + "model { attention_hidden: -3 }",
              "config job.pbtxt: model: attention_hidden sizes must be >= 1, got -3");
  ExpectError(c + "model { max_history: 0 }",
              "config job.pbtxt: model: max_history must be >= 1, got 0");
  ExpectError(c + "model { dice_momentum: 1.5 }",
              "config job.pbtxt: model: dice_momentum must be in [0, 1], got 1.5");
  ExpectError(c + "model { dense_adam { beta1: 1 } }",
              "config job.pbtxt: model: dense_adam.beta1 must be in [0, 1), got 1");
  ExpectError(c + "model { dense_adam { learning_rate: 0 } }",
              "config job.pbtxt: model: dense_adam.learning_rate must be > 0, got 0");
  ExpectError(c + "trainer { epochs: 0 }", "config job.pbtxt: trainer: epochs must be >= 1, got 0");
  ExpectError(c + "trainer { staleness: 2 }",
              "config job.pbtxt: trainer: staleness must be 0 or 1, got 2");
  ExpectError(c + "trainer { eval_batch_size: 0 }",
              "config job.pbtxt: trainer: eval_batch_size must be >= 1, got 0");
  ExpectError(c + "trainer { backend: \"gpu\" }",
              "config job.pbtxt: trainer: backend must be \"auto\", \"cpu\" or \"cuda\", got "
              "\"gpu\"");
  ExpectError(c + "trainer { threads: 0 }",
              "config job.pbtxt: trainer: threads must be >= 1, got 0");
  ExpectError(c + "trainer { log_every_seconds: 0 }",
              "config job.pbtxt: trainer: log_every_seconds must be > 0, got 0");
  ExpectError(c + "trainer { checkpoint { dir: \"/ckpt\" keep: 0 } }",
              "config job.pbtxt: trainer: checkpoint.keep must be >= 1, got 0");
  ExpectError(c + "trainer { checkpoint { dir: \"/ckpt\" every_minutes: -1 } }",
              "config job.pbtxt: trainer: checkpoint.every_minutes must be >= 0, got -1");
  ExpectError(c + "trainer { checkpoint { every_steps: 100 } }",
              "config job.pbtxt: trainer: checkpoint.every_steps or checkpoint.every_minutes is "
              "set but checkpoint.dir is empty (no checkpoints would be written)");
  EXPECT_EQ(ErrorOf(c + "trainer { checkpoint { dir: \"/ckpt\" every_steps: 100 keep: 1 } }"), "");
  ExpectError(c + "security { curve: true }",
              "config job.pbtxt: security: curve is true but key_dir is empty (launch/din-train "
              "creates the keys and sets it; elsewhere set security.key_dir to a directory of "
              "key files)");
  EXPECT_EQ(ErrorOf(c + "security { curve: true key_dir: \"/keys\" }"), "");
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void Write(const std::string& text) { std::ofstream(path_) << text; }
  test::TempDir tmp_{"config_validation_test"};
  const std::string path_ = tmp_ / "job.pbtxt";
};

TEST_F(ConfigFileTest, MessagesNameTheFile) {
  Write(WithUser("shards: 0"));
  auto cfg = LoadConfig(path_);
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().message(),
            "config " + path_ + ": tables[0] (user): shards must be in 1..65536, got 0");
  cfg = LoadConfigWithOverrides(path_, {});
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().message(),
            "config " + path_ + ": tables[0] (user): shards must be in 1..65536, got 0");
  cfg = LoadConfigWithOverrides(path_, {"tables[user].dim=0"});
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.status().message().find("config " + path_ + " (with --set overrides): "),
            std::string::npos)
      << cfg.status().message();
}

TEST_F(ConfigFileTest, OverridesMayCompleteTheFile) {
  // The launcher supplies security.key_dir with --set: the file alone is refused, the file
  // with the override is not.
  Write(std::string(kTables) + "security { curve: true }\n");
  EXPECT_FALSE(LoadConfig(path_).ok());
  EXPECT_FALSE(LoadConfigWithOverrides(path_, {}).ok());
  auto cfg = LoadConfigWithOverrides(path_, {"security.key_dir=/run/keys"});
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->security().key_dir(), "/run/keys");
}

}  // namespace
}  // namespace din
