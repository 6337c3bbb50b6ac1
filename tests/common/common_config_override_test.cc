// `--set PATH=VALUE` overrides (common/config_override.h).
#include "common/config_override.h"

#include <gtest/gtest.h>

#include "common/config.h"
#include "tests/testing/config.h"

namespace din {
namespace {

config::TrainConfig Base() {
  return test::MustParse(R"pb(
    tables { name: "user" dim: 8 }
    tables { name: "item" dim: 16 shards: 4 mba_lambda: 0.5 }
    tables { name: "cate" dim: 4 }
    model { pooling: ATTENTION }
  )pb");
}

TEST(ConfigOverrideTest, ScalarsEnumsStringsAndNewSubMessages) {
  auto cfg = Base();
  ASSERT_TRUE(ApplyOverrides({"model.pooling=SUM", "trainer.epochs=2",
                              "data.train_path=/data/a b/train.tsv", "ps.interface=\"10.0.0.1\"",
                              "trainer.mba_mode=ONLINE", "model.dense_adam.learning_rate=0.003"},
                             &cfg)
                  .ok());
  EXPECT_EQ(cfg.model().pooling(), config::ModelConfig::SUM);
  EXPECT_EQ(cfg.trainer().epochs(), 2u);
  EXPECT_EQ(cfg.data().train_path(), "/data/a b/train.tsv");
  EXPECT_EQ(cfg.ps().interface(), "10.0.0.1");
  EXPECT_EQ(cfg.trainer().mba_mode(), config::TrainerConfig::ONLINE);
  EXPECT_FLOAT_EQ(cfg.model().dense_adam().learning_rate(), 0.003f);
}

TEST(ConfigOverrideTest, RepeatedMessagesByNameOrPosition) {
  auto cfg = Base();
  ASSERT_TRUE(ApplyOverrides(
                  {"tables[item].mba_lambda=0.01", "tables[0].dim=32",
                   "tables[user].optimizer={sgd {learning_rate: 0.1}}", "tables[item]={shards: 2}"},
                  &cfg)
                  .ok());
  EXPECT_FLOAT_EQ(cfg.tables(1).mba_lambda(), 0.01f);
  EXPECT_EQ(cfg.tables(0).dim(), 32u);
  EXPECT_FLOAT_EQ(cfg.tables(0).optimizer().sgd().learning_rate(), 0.1f);
  EXPECT_EQ(cfg.tables(1).shards(), 2u);
  EXPECT_EQ(cfg.tables(1).dim(), 16u) << "merging a body keeps the other fields";
}

TEST(ConfigOverrideTest, RepeatedScalarsAreReplaced) {
  auto cfg = Base();
  ASSERT_TRUE(ApplyOverrides({"model.top_hidden=[200, 80]"}, &cfg).ok());
  ASSERT_TRUE(ApplyOverrides({"model.top_hidden=64,32,16"}, &cfg).ok());
  EXPECT_EQ(std::vector<int>(cfg.model().top_hidden().begin(), cfg.model().top_hidden().end()),
            (std::vector<int>{64, 32, 16}));
}

TEST(ConfigOverrideTest, ErrorsNameTheAssignment) {
  auto cfg = Base();
  const auto bad = {
      "model.nope=1", "tables[shop].dim=8",   "trainer.epochs=many", "model.pooling=BEST",
      "trainer",      "model[0].pooling=SUM", "tables.dim=8",        "tables[item.dim=8"};
  for (const char* a : bad) {
    Status st = ApplyOverride(&cfg, a);
    EXPECT_FALSE(st.ok()) << a;
    EXPECT_NE(st.message().find("--set"), std::string::npos) << st.message();
  }
  // The result is validated: a table of dim 0 is refused.
  Status st = ApplyOverrides({"tables[item].dim=0"}, &cfg);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("dim"), std::string::npos) << st.message();
}

TEST(ConfigOverrideTest, ExtractRepeatedFlag) {
  std::vector<std::string> args = {"prog",      "--config", "x",   "--set",       "a=1",
                                   "--set=b=2", "-set",     "c=3", "--mode=train"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int argc = static_cast<int>(args.size());
  auto sets = ExtractRepeatedFlag("set", &argc, argv.data());
  ASSERT_TRUE(sets.ok());
  EXPECT_EQ(*sets, (std::vector<std::string>{"a=1", "b=2", "c=3"}));
  ASSERT_EQ(argc, 4);
  EXPECT_STREQ(argv[1], "--config");
  EXPECT_STREQ(argv[3], "--mode=train");

  std::vector<std::string> dangling = {"prog", "--set"};
  std::vector<char*> argv2 = {dangling[0].data(), dangling[1].data(), nullptr};
  int argc2 = 2;
  EXPECT_FALSE(ExtractRepeatedFlag("set", &argc2, argv2.data()).ok());
}

}  // namespace
}  // namespace din

namespace din {
namespace {

// Every shipped config parses and validates.
TEST(ShippedConfigsTest, Parse) {
  for (const char* name :
       {"quickstart", "movielens", "amazon_electronics", "reference", "ps_demo"}) {
    const std::string path = std::string(DIN_SOURCE_DIR) + "/launch/configs/" + name + ".pbtxt";
    auto cfg = LoadConfig(path);
    EXPECT_TRUE(cfg.ok()) << path << ": " << cfg.status().ToString();
  }
}

}  // namespace
}  // namespace din
