// A worker's side of checkpoints (worker/worker_state.h): its state file round-trips
// byte for byte (dense parameters, Adam moments and step, Dice statistics, reader
// position, counters), a state cut short, of another worker or of another model shape
// is refused without touching the model; and the collective writing and opening of a
// checkpoint, in one process against servers on loopback: the checkpoint verifies,
// records the state and the job's shape, and opening it loads the tables into fresh
// servers and hands back the state.
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/checkpoint.pb.h"
#include "common/proto/model_config.pb.h"
#include "tests/testing/local_cluster.h"
#include "tests/worker/fake_collective.h"
#include "worker/checkpoint.h"
#include "worker/trainer.h"
#include "worker/worker_state.h"

namespace din {
namespace {

using test::FakeCollective;
using test::LocalCluster;
using test::MustParse;
using test::PullOne;
using test::TotalRows;

// A model's dense state: parameters, Dice statistics and dense Adam.
struct Model {
  Model(size_t params_n, size_t running_n, size_t adam_n)
      : params(params_n), running(running_n), adam(config::DenseAdamConfig(), adam_n) {}
  explicit Model(size_t n = 40, size_t running_n = 12) : Model(n, running_n, n) {}
  DenseState view() { return DenseState{params, running, &adam}; }

  std::vector<float> params, running;
  model::DenseAdam adam;
};

// Arbitrary contents, including values whose bytes a conversion would change.
void Fill(Model* m) {
  for (size_t i = 0; i < m->params.size(); ++i)
    m->params[i] = std::sin(static_cast<float>(i) + 0.5f);
  m->params[0] = -0.0f;
  m->params[1] = std::numeric_limits<float>::denorm_min();
  uint32_t nan_bits = 0x7fc12345;
  std::memcpy(&m->params[2], &nan_bits, sizeof(float));
  for (size_t i = 0; i < m->running.size(); ++i) m->running[i] = 0.25f * static_cast<float>(i);
  std::vector<float> grads(m->params.size());
  std::vector<float> scratch(m->params.size(), 0.1f);
  for (int s = 0; s < 3; ++s) {
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = std::cos(static_cast<float>(i * (s + 1)));
    m->adam.Step(scratch, grads);  // advances the moments and the step
  }
}

bool SameBytes(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

bool SameState(Model& a, Model& b) {
  return SameBytes(a.params, b.params) && SameBytes(a.running, b.running) &&
         SameBytes(a.adam.first_moment(), b.adam.first_moment()) &&
         SameBytes(a.adam.second_moment(), b.adam.second_moment()) &&
         a.adam.step() == b.adam.step();
}

const TrainingPosition kPosition{1234, 2, 345.75, 8192, 70000, 30000};

std::string Encode(Model& m, int worker = 1, int workers = 3) {
  auto bytes = EncodeWorkerState(worker, workers, kPosition, std::string("reader\0pos", 10), "cpu",
                                 m.view());
  EXPECT_TRUE(bytes.ok());
  return *bytes;
}

TEST(WorkerStateTest, RoundTripsByteForByte) {
  Model a;
  Fill(&a);
  const std::string bytes = Encode(a);
  Model b;
  auto decoded = DecodeWorkerState(bytes, "w.state", 1, 3, b.view());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(SameState(a, b));
  EXPECT_EQ(b.adam.step(), 3);
  EXPECT_EQ(decoded->reader_state, std::string("reader\0pos", 10));
  const TrainingPosition& p = decoded->position;
  EXPECT_EQ(p.step, kPosition.step);
  EXPECT_EQ(p.epoch, kPosition.epoch);
  EXPECT_EQ(p.epoch_loss_sum, kPosition.epoch_loss_sum);
  EXPECT_EQ(p.epoch_samples, kPosition.epoch_samples);
  EXPECT_EQ(p.samples_trained, kPosition.samples_trained);
  EXPECT_EQ(p.train_rows, kPosition.train_rows);
  // The restored model writes the same state again.
  EXPECT_EQ(Encode(b), bytes);
  // What the file holds, field by field (the format common/proto/checkpoint.proto).
  ckpt::WorkerState ws;
  ASSERT_TRUE(ws.ParseFromString(bytes));
  EXPECT_EQ(ws.worker(), 1u);
  EXPECT_EQ(ws.workers(), 3u);
  EXPECT_EQ(ws.backend(), "cpu");
  EXPECT_EQ(ws.params().size(), a.params.size() * sizeof(float));
  EXPECT_EQ(ws.adam_step(), 3);
}

TEST(WorkerStateTest, RefusesEveryTruncationWithoutTouchingTheModel) {
  Model a;
  Fill(&a);
  const std::string bytes = Encode(a);
  Model b;
  Fill(&b);
  b.params[5] = 99;  // differs from `a`
  Model before;
  Fill(&before);
  before.params[5] = 99;
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = DecodeWorkerState(bytes.substr(0, n), "w.state", 1, 3, b.view());
    ASSERT_FALSE(r.ok()) << "a state cut to " << n << " of " << bytes.size() << " bytes";
    ASSERT_NE(r.status().message().find("w.state: "), std::string::npos) << r.status().message();
  }
  EXPECT_TRUE(SameState(b, before)) << "a refused state changes nothing";
  EXPECT_FALSE(DecodeWorkerState("\xff\xff\xff\xff", "w.state", 1, 3, b.view()).ok());
  EXPECT_TRUE(SameState(b, before));
}

TEST(WorkerStateTest, RefusesAnotherWorkersState) {
  Model a;
  Fill(&a);
  const std::string bytes = Encode(a, 1, 3);
  Model b;
  auto r = DecodeWorkerState(bytes, "w.state", 0, 3, b.view());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "w.state: state of worker 1 of 3");
  EXPECT_FALSE(DecodeWorkerState(bytes, "w.state", 1, 2, b.view()).ok());
  EXPECT_TRUE(DecodeWorkerState(bytes, "w.state", 1, 3, b.view()).ok());
}

TEST(WorkerStateTest, RefusesAnotherModelShapeWithoutTouchingTheModel) {
  Model a;
  Fill(&a);
  const std::string bytes = Encode(a);
  struct Case {
    size_t params, running, adam;
    const char* what;
  };
  for (const Case& c : {Case{41, 12, 41, "params has 40 values, the model has 41"},
                        Case{40, 11, 40, "running has 12 values, the model has 11"},
                        Case{40, 12, 39, "adam_m has 40 values, the model has 39"}}) {
    Model b(c.params, c.running, c.adam);
    auto r = DecodeWorkerState(bytes, "w.state", 1, 3, b.view());
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_NE(r.status().message().find(std::string("w.state: ") + c.what), std::string::npos)
        << r.status().message();
    for (float v : b.params) EXPECT_EQ(v, 0.0f) << "nothing restored";
    for (float v : b.running) EXPECT_EQ(v, 0.0f) << "nothing restored";
    EXPECT_EQ(b.adam.step(), 0);
  }
}

class CheckpointWritingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::path(::testing::TempDir()) /
            ("worker_state_test_" + std::to_string(getpid())))
               .string();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    cfg_ = MustParse(
        "tables { name: \"item\" dim: 4 shards: 3 optimizer { adam {} } }\n"
        "tables { name: \"user\" dim: 2 shards: 1 optimizer { adagrad {} } }\n"
        "ps { request_timeout_ms: 10000 }\n"
        "trainer { checkpoint { dir: \"" +
        dir_ + "/ck\" keep: 5 } }\n");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  config::TrainConfig cfg_;
};

TEST_F(CheckpointWritingTest, WritesAVerifiedCheckpointAndOpensIt) {
  LocalCluster cluster(cfg_, 2, 2);
  auto client = cluster.Connect();
  PullOne(*client, 0, {1, 2, 3, 1000, 1 << 30});
  PullOne(*client, 1, {5, 6});
  ASSERT_EQ(TotalRows(*client), 7u);
  Model m;
  Fill(&m);
  const std::string state = Encode(m, 0, 1);

  FakeCollective solo(0, 1);
  auto path =
      WriteCheckpoint(solo, *client, cfg_, /*num_servers=*/2, /*step=*/40, /*epoch=*/1, state);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, dir_ + "/ck/" + CheckpointName(40));
  EXPECT_GE(solo.barriers, 2) << "pushes applied before, tables on disk after";
  auto manifest = VerifyCheckpoint(*path);
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ(manifest->step(), 40u);
  EXPECT_EQ(manifest->epoch(), 1u);
  EXPECT_EQ(manifest->workers(), 1u);
  EXPECT_EQ(manifest->servers(), 2u);
  ASSERT_EQ(manifest->files_size(), 1);
  EXPECT_EQ(manifest->files(0).name(), WorkerStateName(0));
  EXPECT_EQ(manifest->files(0).bytes(), state.size());
  EXPECT_EQ(manifest->config().SerializeAsString(), cfg_.SerializeAsString());
  EXPECT_FALSE(std::filesystem::exists(*path + ".tmp"));

  // Opened by a job with fresh servers (another count of them).
  config::TrainConfig resume = cfg_;
  resume.mutable_trainer()->set_resume_from(dir_ + "/ck");
  LocalCluster fresh(resume, 3, 1);
  auto client2 = fresh.Connect();
  FakeCollective solo2(0, 1);
  auto opened = OpenCheckpoint(solo2, *client2, resume);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->dir, *path);
  EXPECT_EQ(opened->file, *path + "/" + WorkerStateName(0));
  EXPECT_EQ(opened->state, state);
  EXPECT_EQ(TotalRows(*client2), 7u) << "the tables are loaded";
  EXPECT_GE(solo2.barriers, 1) << "rows in place on every server before anyone pulls";
  Model restored;
  ASSERT_TRUE(DecodeWorkerState(opened->state, opened->file, 0, 1, restored.view()).ok());
  EXPECT_TRUE(SameState(m, restored));
}

TEST_F(CheckpointWritingTest, OpeningRefusesAnotherWorkerCountOrNoCheckpoint) {
  LocalCluster cluster(cfg_, 1, 1);
  auto client = cluster.Connect();
  PullOne(*client, 0, {1, 2});
  FakeCollective solo(0, 1);
  ASSERT_TRUE(WriteCheckpoint(solo, *client, cfg_, 1, 8, 0, "state").ok());

  config::TrainConfig resume = cfg_;
  resume.mutable_trainer()->set_resume_from(dir_ + "/ck");
  FakeCollective two(0, 2);
  auto r = OpenCheckpoint(two, *client, resume);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("was written by 1 workers; resume it with the same "
                                      "number of workers (--workers 1)"),
            std::string::npos)
      << r.status().message();

  // Worker 1 learns worker 0's verdict by broadcast.
  FakeCollective second(1, 2);
  second.broadcast = "-resume: no checkpoint here";
  r = OpenCheckpoint(second, *client, resume);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "resume: no checkpoint here");

  std::filesystem::create_directories(dir_ + "/empty");
  resume.mutable_trainer()->set_resume_from(dir_ + "/empty");
  r = OpenCheckpoint(solo, *client, resume);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no checkpoint"), std::string::npos) << r.status().message();
}

// ---- Dense replicas identical on every worker at the end ----------------------------

std::vector<std::byte> ChecksumBytes(std::initializer_list<uint64_t> sums) {
  std::vector<std::byte> out(sums.size() * sizeof(uint64_t));
  std::memcpy(out.data(), std::data(sums), out.size());
  return out;
}

TEST(DenseReplicasTest, EqualChecksumsPass) {
  FakeCollective root(0, 3);
  root.other_bytes = ChecksumBytes({0x1234, 0x1234});
  EXPECT_TRUE(CheckDenseReplicas(root, 0x1234).ok());
  FakeCollective other(2, 3);  // worker 0's verdict: agreement
  EXPECT_TRUE(CheckDenseReplicas(other, 0x1234).ok());
}

TEST(DenseReplicasTest, ADifferentWorkerFailsNamingItAndTheChecksums) {
  FakeCollective root(0, 3);
  root.other_bytes = ChecksumBytes({0x1234, 0xabcd});
  const Status s = CheckDenseReplicas(root, 0x1234);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dense weights differ between workers"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("worker 0 0000000000001234"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("worker 2 000000000000abcd"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("worker 1"), std::string::npos) << s.message();
}

// A worker other than 0 fails with worker 0's verdict, whatever its own checksum.
TEST(DenseReplicasTest, EveryWorkerFailsWithWorkerZerosVerdict) {
  FakeCollective other(1, 2);
  other.broadcast = "dense weights differ between workers at the end of training: ...";
  const Status s = CheckDenseReplicas(other, 0x1234);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), other.broadcast);
}

TEST(DenseReplicasTest, AFailedGatherIsReturned) {
  FakeCollective root(0, 2);
  root.fail = Status::Unavailable("MPI gather failed");
  const Status s = CheckDenseReplicas(root, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "MPI gather failed");
}

}  // namespace
}  // namespace din
