// Checkpoint directories (worker/checkpoint.h): names, listing, the durable state-file
// writer, verification (each way a checkpoint can be incomplete or damaged is refused,
// naming why), choosing the newest intact checkpoint, and finishing one: the rename,
// replacing one of the same step, retention of the newest `keep` complete ones and
// removal of stale .tmp directories. The tables inside are real (SaveTables from servers
// in this process); their save and load are tested by
// tests/worker/worker_dump_manifest_checkpoint_test.cc.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "common/dump_format.h"
#include "tests/testing/local_cluster.h"
#include "worker/checkpoint.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

namespace fs = std::filesystem;
using test::LocalCluster;
using test::MustParse;
using test::PullOne;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

bool Has(const Status& st, const std::string& part) {
  return st.message().find(part) != std::string::npos;
}

TEST(CheckpointNamesTest, SortByStep) {
  EXPECT_EQ(CheckpointName(1234), "ckpt-000000001234");
  EXPECT_EQ(CheckpointName(0), "ckpt-000000000000");
  EXPECT_EQ(CheckpointName(999999999999), "ckpt-999999999999");
  EXPECT_LT(CheckpointName(99), CheckpointName(100));
  EXPECT_EQ(WorkerStateName(3), "worker-00003.state");
  EXPECT_EQ(WorkerStateName(12345), "worker-12345.state");
}

class CheckpointDirTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ =
        (fs::path(::testing::TempDir()) / ("worker_checkpoint_test_" + std::to_string(getpid())))
            .string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    // One real table checkpoint, copied into every checkpoint the tests make.
    cfg_ = new config::TrainConfig(
        MustParse("tables { name: \"item\" dim: 4 shards: 2 optimizer { adam {} } }\n"
                  "tables { name: \"user\" dim: 2 shards: 1 }\n"
                  "ps { request_timeout_ms: 10000 }\n"));
    LocalCluster cluster(*cfg_, 1, 2);
    auto client = cluster.Connect();
    PullOne(*client, 0, {1, 2, 3, 4, 5});
    PullOne(*client, 1, {7});
    tables_ = root_ + "/saved-tables";
    ASSERT_TRUE(SaveTables(*client, *cfg_, tables_, 1).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(root_);
    delete cfg_;
  }
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = root_ + "/" + info->name();
    fs::create_directories(dir_);
  }

  // Writes a complete checkpoint of `step` by `workers` workers into `dir` and returns
  // its path.
  static std::string Make(const std::string& dir, uint64_t step, int workers = 2,
                          uint32_t keep = 100, const std::string& tag = "") {
    const std::string tmp = dir + "/" + CheckpointName(step) + ".tmp";
    fs::create_directories(tmp);
    fs::copy(tables_, tmp + "/tables", fs::copy_options::recursive);
    ckpt::CheckpointManifest m;
    m.set_version(1);
    m.set_step(step);
    m.set_epoch(static_cast<uint32_t>(step / 10));
    m.set_workers(static_cast<uint32_t>(workers));
    m.set_servers(1);
    for (int w = 0; w < workers; ++w) {
      auto f = WriteCheckpointFile(
          tmp, WorkerStateName(w),
          "state of worker " + std::to_string(w) + " at step " + std::to_string(step) + tag);
      EXPECT_TRUE(f.ok());
      *m.add_files() = *f;
    }
    *m.mutable_config() = *cfg_;
    auto path = FinishCheckpoint(tmp, m, keep);
    EXPECT_TRUE(path.ok()) << path.status().ToString();
    return *path;
  }

  // Rewrites dir/CHECKPOINT after `edit`.
  template <typename F>
  static void EditManifest(const std::string& dir, F edit) {
    ckpt::CheckpointManifest m;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
        Slurp(dir + "/" + kCheckpointManifestName), &m));
    edit(&m);
    std::string text;
    ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(m, &text));
    Spit(dir + "/" + kCheckpointManifestName, text);
  }

  static std::vector<std::string> Names(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  static inline std::string root_, tables_;
  static inline config::TrainConfig* cfg_ = nullptr;
  std::string dir_;
};

TEST_F(CheckpointDirTest, WriteCheckpointFileRecordsSizeAndChecksum) {
  const std::string bytes("worker\0state", 12);
  auto f = WriteCheckpointFile(dir_, "worker-00000.state", bytes);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(Slurp(dir_ + "/worker-00000.state"), bytes);
  EXPECT_EQ(f->name(), "worker-00000.state");
  EXPECT_EQ(f->bytes(), 12u);
  char hex[20];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(Xxh64::Of(bytes.data(), bytes.size())));
  EXPECT_EQ(f->xxh64(), hex);
  EXPECT_FALSE(WriteCheckpointFile(dir_ + "/missing", "x", "y").ok());
}

TEST_F(CheckpointDirTest, ListCheckpointsTakesCheckpointDirectoriesByStep) {
  for (const char* d : {"ckpt-000000000010", "ckpt-2", "ckpt-000000000005.tmp", "ckpt-abc", "ckpt-",
                        "ckpt-12345678901234567890", "ckpt-7x", "other"})
    fs::create_directories(dir_ + "/" + d);
  Spit(dir_ + "/ckpt-000000000003", "a file, not a checkpoint");
  const auto all = ListCheckpoints(dir_);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 2u);
  EXPECT_EQ(all[0].second, dir_ + "/ckpt-2");
  EXPECT_EQ(all[1].first, 10u);
  EXPECT_EQ(all[1].second, dir_ + "/ckpt-000000000010");
  EXPECT_TRUE(ListCheckpoints(dir_ + "/none").empty());
}

TEST_F(CheckpointDirTest, FinishCheckpointCompletesAndRenames) {
  const std::string path = Make(dir_, 40);
  EXPECT_EQ(path, dir_ + "/" + CheckpointName(40));
  EXPECT_EQ(Names(dir_), std::vector<std::string>{CheckpointName(40)}) << "no .tmp left";
  EXPECT_TRUE(fs::exists(path + "/" + kSuccessName));
  EXPECT_EQ(Names(path), (std::vector<std::string>{"CHECKPOINT", "_SUCCESS", "tables",
                                                   "worker-00000.state", "worker-00001.state"}));
  auto m = VerifyCheckpoint(path);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->step(), 40u);
  EXPECT_EQ(m->epoch(), 4u);
  EXPECT_EQ(m->workers(), 2u);
  EXPECT_EQ(m->config().tables_size(), 2);
}

TEST_F(CheckpointDirTest, FinishCheckpointReplacesOneOfTheSameStep) {
  Make(dir_, 40, 2, 100, " (first)");
  const std::string path = Make(dir_, 40, 2, 100, " (second)");
  EXPECT_EQ(Slurp(path + "/worker-00001.state"), "state of worker 1 at step 40 (second)");
  EXPECT_EQ(Names(dir_), std::vector<std::string>{CheckpointName(40)}) << "no .old left";
  EXPECT_TRUE(VerifyCheckpoint(path).ok());
}

TEST_F(CheckpointDirTest, FinishCheckpointKeepsTheNewestCompleteOnes) {
  for (uint64_t step : {10, 20, 30}) Make(dir_, step);
  // An interrupted checkpoint (renamed but without _SUCCESS) is not counted nor deleted;
  // a writer that died left a .tmp directory; an unrelated directory stays.
  fs::create_directories(dir_ + "/" + CheckpointName(35));
  fs::create_directories(dir_ + "/" + CheckpointName(25) + ".tmp/tables");
  fs::create_directories(dir_ + "/unrelated");
  Make(dir_, 40, 2, /*keep=*/2);
  EXPECT_EQ(Names(dir_), (std::vector<std::string>{CheckpointName(30), CheckpointName(35),
                                                   CheckpointName(40), "unrelated"}));
  Make(dir_, 50, 2, /*keep=*/0);  // taken as 1
  EXPECT_EQ(Names(dir_),
            (std::vector<std::string>{CheckpointName(35), CheckpointName(50), "unrelated"}));
}

TEST_F(CheckpointDirTest, VerifyAcceptsAnIntactCheckpoint) {
  EXPECT_TRUE(VerifyCheckpoint(Make(dir_, 10)).ok());
}

// Each damage, applied to a fresh checkpoint, and what the refusal says.
TEST_F(CheckpointDirTest, VerifyRefusesIncompleteOrDamagedCheckpoints) {
  struct Damage {
    const char* name;
    std::function<void(const std::string&)> apply;
    std::string says;
  };
  const std::string state1 = std::string("/") + WorkerStateName(1);
  const std::vector<Damage> damages = {
      {"no _SUCCESS", [](const std::string& d) { fs::remove(d + "/_SUCCESS"); },
       "no _SUCCESS (the checkpoint was not completed)"},
      {"no CHECKPOINT", [](const std::string& d) { fs::remove(d + "/CHECKPOINT"); },
       "no CHECKPOINT file"},
      {"CHECKPOINT garbage", [](const std::string& d) { Spit(d + "/CHECKPOINT", "step: {"); },
       "CHECKPOINT: cannot parse"},
      {"unknown version",
       [](const std::string& d) { EditManifest(d, [](auto* m) { m->set_version(2); }); },
       "unknown version 2"},
      {"a worker state fewer",
       [](const std::string& d) { EditManifest(d, [](auto* m) { m->set_workers(3); }); },
       "2 worker states for 3 workers"},
      {"bad checksum text",
       [](const std::string& d) {
         EditManifest(d, [](auto* m) { m->mutable_files(1)->set_xxh64("xyz"); });
       },
       "bad checksum of worker-00001.state"},
      {"a path for a name",
       [](const std::string& d) {
         EditManifest(d, [](auto* m) { m->mutable_files(0)->set_name("../worker-00000.state"); });
       },
       "bad file name ../worker-00000.state"},
      {"state missing", [&](const std::string& d) { fs::remove(d + state1); }, "cannot open"},
      {"state truncated",
       [&](const std::string& d) {
         const std::string s = Slurp(d + state1);
         Spit(d + state1, s.substr(0, s.size() - 1));
       },
       "bytes, the manifest says"},
      {"state byte flipped",
       [&](const std::string& d) {
         std::string s = Slurp(d + state1);
         s[3] ^= 0x40;
         Spit(d + state1, s);
       },
       "XXH64"},
      {"table part truncated",
       [](const std::string& d) {
         const std::string part = d + "/tables/item/" + DumpPartStem(1, 2) + ".emb.npy";
         fs::resize_file(part, fs::file_size(part) - 4);
       },
       DumpPartStem(1, 2) + ".emb.npy"},
      {"tables incomplete", [](const std::string& d) { fs::remove(d + "/tables/_SUCCESS"); },
       "tables"},
  };
  uint64_t step = 100;
  for (const auto& damage : damages) {
    SCOPED_TRACE(damage.name);
    const std::string path = Make(dir_, step++);
    ASSERT_TRUE(VerifyCheckpoint(path).ok());
    damage.apply(path);
    auto m = VerifyCheckpoint(path);
    ASSERT_FALSE(m.ok());
    EXPECT_TRUE(Has(m.status(), damage.says)) << m.status().ToString();
  }
  EXPECT_EQ(VerifyCheckpoint(dir_ + "/none").status().code(), StatusCode::kNotFound);
}

TEST_F(CheckpointDirTest, FindCheckpointTakesTheNewestIntactOne) {
  const std::string ok10 = Make(dir_, 10);
  const std::string bad20 = Make(dir_, 20);
  const std::string bad30 = Make(dir_, 30);
  fs::create_directories(dir_ + "/" + CheckpointName(40) + ".tmp");  // being written
  std::string s = Slurp(bad20 + "/" + WorkerStateName(0));
  s[0] ^= 1;
  Spit(bad20 + "/" + WorkerStateName(0), s);
  fs::remove(bad30 + "/_SUCCESS");

  std::vector<std::string> refused;
  auto found = FindCheckpoint(dir_, &refused);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, ok10);
  ASSERT_EQ(refused.size(), 2u) << "newest first";
  EXPECT_EQ(refused[0].rfind("refusing checkpoint " + bad30 + ": ", 0), 0u) << refused[0];
  EXPECT_NE(refused[0].find("no _SUCCESS"), std::string::npos) << refused[0];
  EXPECT_EQ(refused[1].rfind("refusing checkpoint " + bad20 + ": ", 0), 0u) << refused[1];
  EXPECT_NE(refused[1].find("XXH64"), std::string::npos) << refused[1];

  // Named directly: that one, intact or refused.
  found = FindCheckpoint(ok10, nullptr);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, ok10);
  found = FindCheckpoint(bad20, nullptr);
  ASSERT_FALSE(found.ok());
  EXPECT_TRUE(Has(found.status(), "resume: refusing checkpoint " + bad20))
      << found.status().ToString();

  // Nothing intact: a failure, not a fresh start.
  fs::remove(ok10 + "/_SUCCESS");
  found = FindCheckpoint(dir_, nullptr);
  ASSERT_FALSE(found.ok());
  EXPECT_TRUE(Has(found.status(), "no complete, intact checkpoint in " + dir_ + " (3 refused)"))
      << found.status().ToString();
}

TEST_F(CheckpointDirTest, FindCheckpointWithoutCheckpoints) {
  auto found = FindCheckpoint(dir_, nullptr);
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(Has(found.status(), "no checkpoint (ckpt-STEP directory) in " + dir_));
  found = FindCheckpoint(dir_ + "/none", nullptr);
  ASSERT_FALSE(found.ok());
  EXPECT_TRUE(Has(found.status(), "is not a directory"));
}

}  // namespace
}  // namespace din
