// Table checkpoints (SaveTables / LoadTables): saved by 2 servers with `item` in 4
// shards, restored into 3 servers x 2 lanes with `item` in 7 shards, every row's id,
// weights, optimizer state and count come back byte for byte; a corrupted or incomplete
// checkpoint, or one of another shape, is refused and loads nothing; training goes on
// identically from the restored rows.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/dump_format.h"
#include "common/hash.h"
#include "tests/testing/files.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/temp_dir.h"
#include "worker/dump_manifest.h"

namespace din {
namespace {

using test::LocalCluster;
using test::MustParse;
using test::PullOne;
using test::PushOne;
using test::ReadFile;
using test::RunCommand;
using test::TotalRows;

std::string Config(int item_shards, int user_dim = 3, const std::string& item_opt = "adam {}") {
  return test::Table("item", 4, item_shards, "optimizer { " + item_opt + " }") +
         test::Table("user", user_dim, 2, "seed: 3 optimizer { adagrad {} }") +
         test::Table("cat", 2, 1, "optimizer { sgd {} }") + "ps { request_timeout_ms: 10000 }\n";
}

// The bytes of one row of a checkpoint.
struct Row {
  std::string weights;
  std::string state;
  uint32_t count = 0;
  bool operator==(const Row&) const = default;
};
using Snapshot = std::map<std::string, std::map<uint64_t, Row>>;  // table -> id -> row

// Reads a whole checkpoint back from its files (checking that part S of N holds exactly
// the IDs of shard S).
Snapshot ReadCheckpoint(const std::string& dir) {
  auto m = ReadCompleteManifest(dir);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  Snapshot snap;
  if (!m.ok()) return snap;
  for (const ManifestTable& t : m->tables) {
    EXPECT_TRUE(t.checkpoint()) << t.name;
    auto& rows = snap[t.name];
    for (const ManifestPart& p : t.parts) {
      const std::string stem = dir + "/" + t.name + "/" + DumpPartStem(p.shard, t.shards);
      const std::string ids = ReadFile(stem + ".ids.npy");
      const std::string emb = ReadFile(stem + ".emb.npy");
      const std::string state = ReadFile(stem + ".state.npy");
      const std::string count = ReadFile(stem + ".count.npy");
      auto ih = ParseNpyHeader(ids, stem);
      auto eh = ParseNpyHeader(emb, stem);
      auto sh = ParseNpyHeader(state, stem);
      auto ch = ParseNpyHeader(count, stem);
      EXPECT_TRUE(ih.ok() && eh.ok() && sh.ok() && ch.ok()) << stem;
      if (!ih.ok() || !eh.ok() || !sh.ok() || !ch.ok()) continue;
      EXPECT_EQ(sh->shape, (std::vector<uint64_t>{p.rows, t.state_floats}));
      const size_t wb = size_t{t.dim} * 4, sb = size_t{t.state_floats} * 4;
      for (uint64_t i = 0; i < p.rows; ++i) {
        uint64_t id;
        std::memcpy(&id, ids.data() + ih->header_bytes + i * 8, 8);
        EXPECT_EQ(ShardOf(id, t.shards), p.shard);
        Row r;
        r.weights = emb.substr(eh->header_bytes + i * wb, wb);
        r.state = state.substr(sh->header_bytes + i * sb, sb);
        std::memcpy(&r.count, count.data() + ch->header_bytes + i * 4, 4);
        EXPECT_TRUE(rows.emplace(id, r).second) << "duplicate id " << id;
      }
    }
  }
  return snap;
}

class CheckpointTest : public ::testing::Test {
 protected:
  std::string Dir(const std::string& name) const { return tmp_ / name; }

  test::TempDir tmp_{"din_checkpoint_test"};
};

std::vector<uint64_t> Ids(std::mt19937_64& rng, size_t n) {
  std::vector<uint64_t> ids(n);
  for (auto& id : ids) id = rng();
  return ids;
}

std::vector<float> Grads(std::mt19937_64& rng, size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> g(n);
  for (auto& x : g) x = u(rng);
  return g;
}

// A few steps on every table: pulls create rows, pushes of varying subsets advance the
// optimizer state (Adam step counts differ per row), counts accumulate.
void Train(PsClient& client, const std::vector<std::vector<uint64_t>>& ids,
           const std::vector<uint32_t>& dims, std::mt19937_64& rng) {
  for (int step = 0; step < 4; ++step) {
    for (size_t t = 0; t < ids.size(); ++t) {
      PullOne(client, static_cast<int>(t), ids[t]);
      std::vector<uint64_t> sub;
      for (size_t i = 0; i < ids[t].size(); ++i)
        if ((i + step) % (step + 2) != 0) sub.push_back(ids[t][i]);
      PushOne(client, static_cast<int>(t), sub, Grads(rng, sub.size() * dims[t]));
      std::vector<uint32_t> counts(sub.size());
      for (size_t i = 0; i < sub.size(); ++i) counts[i] = static_cast<uint32_t>(1 + i % 5);
      CountSpec spec{static_cast<int>(t), sub, counts};
      auto h = client.PushCounts({&spec, 1});
      ASSERT_TRUE(h.ok()) << h.status().ToString();
      ASSERT_TRUE(client.Wait(*h).ok());
    }
  }
}

TEST_F(CheckpointTest, ReshardsExactlyAndRefusesBadCheckpoints) {
  const auto cfg_a = MustParse(Config(4));
  const auto cfg_b = MustParse(Config(7));
  const std::vector<uint32_t> dims = {4, 3, 2};
  LocalCluster a(cfg_a, 2, 2);
  auto ca = a.Connect();
  std::mt19937_64 rng(7);
  const std::vector<std::vector<uint64_t>> ids = {Ids(rng, 300), Ids(rng, 60), Ids(rng, 10)};
  Train(*ca, ids, dims, rng);
  const uint64_t rows = TotalRows(*ca);
  ASSERT_EQ(rows, 370u);

  const std::string saved = Dir("saved");
  ASSERT_TRUE(SaveTables(*ca, cfg_a, saved, 4).ok());
  const Snapshot before = ReadCheckpoint(saved);
  ASSERT_EQ(before.at("item").size(), 300u);
  // din_dump inspect verifies checkpoints too (state parts included).
  EXPECT_EQ(RunCommand(std::string(DIN_DUMP_TOOL) + " inspect " + saved + " > /dev/null"), 0);
  // Adam's per-row step counts are in the state; they differ between rows.
  {
    auto m = ReadCompleteManifest(saved);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->Find("item")->optimizer, "adam");
    EXPECT_EQ(m->Find("user")->optimizer, "adagrad");
    EXPECT_EQ(m->Find("cat")->state_floats, 0u);
  }

  // Refused checkpoints load nothing.
  {
    LocalCluster c(cfg_b, 3, 2);
    auto cc = c.Connect();
    const std::string flipped = Dir("flipped");
    std::filesystem::copy(saved, flipped, std::filesystem::copy_options::recursive);
    const std::string victim = flipped + "/item/" + DumpPartStem(2, 4) + ".state.npy";
    {
      std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(-5, std::ios::end);
      char c = 0;
      f.read(&c, 1);
      c ^= 0x10;
      f.seekp(-5, std::ios::end);
      f.write(&c, 1);
    }
    auto r = LoadTables(*cc, cfg_b, flipped);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(victim), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("checksum"), std::string::npos) << r.status().ToString();
    EXPECT_EQ(TotalRows(*cc), 0u);

    const std::string incomplete = Dir("incomplete");
    std::filesystem::copy(saved, incomplete, std::filesystem::copy_options::recursive);
    std::filesystem::remove(incomplete + "/_SUCCESS");
    r = LoadTables(*cc, cfg_b, incomplete);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("_SUCCESS"), std::string::npos) << r.status().ToString();
    auto direct = cc->Load(incomplete);
    ASSERT_FALSE(direct.ok());
    EXPECT_NE(direct.status().message().find("_SUCCESS"), std::string::npos);
    EXPECT_EQ(TotalRows(*cc), 0u);

    // Straight to the servers: the lanes that stream the flipped file (every lane serves
    // one of item's 7 shards, and its shard count changed, so each reads every part)
    // refuse it naming the file, and hold no row: the refused checkpoint loads nothing.
    direct = cc->Load(flipped);
    ASSERT_FALSE(direct.ok());
    EXPECT_NE(direct.status().message().find(victim + ": checksum"), std::string::npos)
        << direct.status().ToString();
    EXPECT_EQ(TotalRows(*cc), 0u);
  }
  // A bad file that only one lane reads (cat: one shard, as saved): LoadTables verifies
  // every file before the LOAD, so no lane loads anything; straight to the servers, the
  // other lanes load their rows and the one lane refuses, holding no cat row.
  {
    LocalCluster c(cfg_b, 3, 2);
    auto cc = c.Connect();
    const std::string flipped = Dir("flipped_cat");
    std::filesystem::copy(saved, flipped, std::filesystem::copy_options::recursive);
    const std::string victim = flipped + "/cat/" + DumpPartStem(0, 1) + ".emb.npy";
    {
      std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(-3, std::ios::end);
      char c = 0;
      f.read(&c, 1);
      c ^= 0x01;
      f.seekp(-3, std::ios::end);
      f.write(&c, 1);
    }
    auto r = LoadTables(*cc, cfg_b, flipped);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(victim + ": checksum"), std::string::npos)
        << r.status().ToString();
    EXPECT_EQ(TotalRows(*cc), 0u);
    auto direct = cc->Load(flipped);
    ASSERT_FALSE(direct.ok());
    EXPECT_NE(direct.status().message().find(victim + ": checksum"), std::string::npos)
        << direct.status().ToString();
    auto stats = cc->Stats();
    ASSERT_TRUE(stats.ok());
    uint64_t cat_rows = 0, other_rows = 0;
    for (const auto& st : *stats) (st.table() == 2 ? cat_rows : other_rows) += st.rows();
    EXPECT_EQ(cat_rows, 0u);
    EXPECT_GT(other_rows, 0u);
  }
  {  // Another dim, another optimizer (another state size).
    const auto cfg_dim = MustParse(Config(7, 5));
    LocalCluster c(cfg_dim, 1, 1);
    auto cc = c.Connect();
    auto r = LoadTables(*cc, cfg_dim, saved);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("dim"), std::string::npos) << r.status().ToString();
    EXPECT_EQ(TotalRows(*cc), 0u);
  }
  {
    const auto cfg_opt = MustParse(Config(7, 3, "adagrad {}"));
    LocalCluster c(cfg_opt, 2, 1);
    auto cc = c.Connect();
    auto r = LoadTables(*cc, cfg_opt, saved);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("optimizer adam"), std::string::npos)
        << r.status().ToString();
    EXPECT_EQ(TotalRows(*cc), 0u);
  }
  {  // A plain dump has no optimizer state.
    const std::string dump = Dir("dump");
    ASSERT_TRUE(DumpTables(*ca, cfg_a, dump, 4).ok());
    LocalCluster c(cfg_b, 1, 1);
    auto cc = c.Connect();
    auto r = LoadTables(*cc, cfg_b, dump);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("not a checkpoint"), std::string::npos)
        << r.status().ToString();
  }

  // Restore into 3 servers x 2 lanes with item in 7 shards.
  LocalCluster b(cfg_b, 3, 2);
  auto cb = b.Connect();
  auto loaded = LoadTables(*cb, cfg_b, saved);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(*loaded, rows);
  EXPECT_EQ(TotalRows(*cb), rows);
  const std::string resaved = Dir("resaved");
  ASSERT_TRUE(SaveTables(*cb, cfg_b, resaved, 4).ok());
  EXPECT_TRUE(ReadCheckpoint(resaved) == before);

  // The same gradients on both sides give bit-identical rows (optimizer state restored).
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto g = Grads(rng, ids[t].size() * dims[t]);
    PushOne(*ca, static_cast<int>(t), ids[t], g);
    PushOne(*cb, static_cast<int>(t), ids[t], g);
    const auto pa = PullOne(*ca, static_cast<int>(t), ids[t], wire::EVAL);
    const auto pb = PullOne(*cb, static_cast<int>(t), ids[t], wire::EVAL);
    ASSERT_EQ(pa.values.size(), pb.values.size());
    EXPECT_EQ(std::memcmp(pa.values.data(), pb.values.data(), pa.values.size() * 4), 0);
    EXPECT_EQ(pa.counts, pb.counts);
  }
  const std::string after_a = Dir("after_a"), after_b = Dir("after_b");
  ASSERT_TRUE(SaveTables(*ca, cfg_a, after_a, 5).ok());
  ASSERT_TRUE(SaveTables(*cb, cfg_b, after_b, 5).ok());
  const Snapshot sa = ReadCheckpoint(after_a);
  EXPECT_TRUE(sa == ReadCheckpoint(after_b));
  EXPECT_FALSE(sa == before);
}

}  // namespace
}  // namespace din
