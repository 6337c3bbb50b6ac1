// Whole dumps from in-process servers (2 servers x 2 lanes on loopback): the files read
// back exactly as pulls see the rows, numpy loads every part, and tools/din_dump
// verifies, looks up and converts them.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

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

constexpr char kConfig[] = R"pb(
  tables {
    name: "item"
    dim: 8
    shards: 5
    optimizer { adagrad {} }
    dump_counts: true
  }
  tables { name: "cat" dim: 3 shards: 3 seed: 4 dump_format: TEXT }
  tables { name: "user" dim: 2 shards: 1 }
  ps { request_timeout_ms: 10000 }
)pb";

struct Row {
  std::vector<float> w;
  uint32_t count = 0;
};

// Reads every part of a table back with the C++ reader: id -> row.
std::map<uint64_t, Row> ReadTable(const std::string& dir, const ManifestTable& t) {
  std::map<uint64_t, Row> rows;
  for (const ManifestPart& p : t.parts) {
    const std::string stem = dir + "/" + t.name + "/" + DumpPartStem(p.shard, t.shards);
    if (t.text) {
      std::istringstream in(ReadFile(stem + ".txt"));
      std::string line;
      while (std::getline(in, line)) {
        uint64_t id;
        const char* s = line.data();
        const char* end = s + line.size();
        s = std::from_chars(s, end, id).ptr;
        EXPECT_EQ(*s, '\t');
        Row r;
        r.w.resize(t.dim);
        for (uint32_t d = 0; d < t.dim; ++d) s = std::from_chars(s + 1, end, r.w[d]).ptr;
        EXPECT_EQ(s, end) << line;
        EXPECT_EQ(ShardOf(id, t.shards), p.shard);
        EXPECT_TRUE(rows.emplace(id, r).second);
      }
      continue;
    }
    const std::string ids = ReadFile(stem + ".ids.npy");
    const std::string emb = ReadFile(stem + ".emb.npy");
    auto ih = ParseNpyHeader(ids, stem);
    auto eh = ParseNpyHeader(emb, stem);
    EXPECT_TRUE(ih.ok() && eh.ok());
    EXPECT_EQ(ih->shape, std::vector<uint64_t>{p.rows});
    EXPECT_EQ(eh->shape, (std::vector<uint64_t>{p.rows, t.dim}));
    std::string cnt;
    size_t count_offset = 0;
    if (t.counts) {
      cnt = ReadFile(stem + ".count.npy");
      auto ch = ParseNpyHeader(cnt, stem);
      EXPECT_TRUE(ch.ok());
      count_offset = ch->header_bytes;
    }
    for (uint64_t r = 0; r < p.rows; ++r) {
      uint64_t id;
      std::memcpy(&id, ids.data() + ih->header_bytes + 8 * r, 8);
      Row row;
      row.w.resize(t.dim);
      std::memcpy(row.w.data(), emb.data() + eh->header_bytes + 4 * t.dim * r, 4 * t.dim);
      if (t.counts) std::memcpy(&row.count, cnt.data() + count_offset + 4 * r, 4);
      EXPECT_EQ(ShardOf(id, t.shards), p.shard);
      EXPECT_TRUE(rows.emplace(id, row).second);
    }
  }
  return rows;
}

class DumpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = MustParse(kConfig);
    cluster_ = std::make_unique<LocalCluster>(cfg_, 2, 2);
    client_ = cluster_->Connect();
    for (uint64_t i = 0; i < 600; ++i) item_ids_.push_back(Mix64(i) >> 1);
    for (uint64_t i = 0; i < 40; ++i) cat_ids_.push_back(i * 7 + 1);
    PullOne(*client_, 0, item_ids_);
    PullOne(*client_, 1, cat_ids_);
    // Change some rows and counts, so the dump is not just initial values.
    std::vector<uint64_t> pushed(item_ids_.begin(), item_ids_.begin() + 100);
    std::vector<float> grads(pushed.size() * 8);
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = 0.01f * static_cast<float>(i % 17);
    PushOne(*client_, 0, pushed, grads);
    std::vector<uint32_t> counts(pushed.size());
    for (size_t i = 0; i < counts.size(); ++i) counts[i] = static_cast<uint32_t>(i + 1);
    CountSpec cs{0, pushed, counts};
    auto h = client_->PushCounts({&cs, 1});
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE(client_->Wait(*h).ok());
    Status st = DumpTables(*client_, cfg_, dir_, 42);
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto m = ParseManifest(ReadFile(dir_ + "/MANIFEST"), "MANIFEST");
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    manifest_ = *m;
  }
  std::string Tool(const std::string& args) const {
    return std::string(DIN_DUMP_TOOL) + " " + args + " 2>&1";
  }
  std::string Copy(const std::string& name) const {
    const std::string copy = dir_ + "_" + name;
    std::filesystem::remove_all(copy);
    std::filesystem::copy(dir_, copy, std::filesystem::copy_options::recursive);
    return copy;
  }

  test::TempDir tmp_{"din_dump_test"};
  const std::string dir_ = tmp_ / "dump";
  config::TrainConfig cfg_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<PsClient> client_;
  std::vector<uint64_t> item_ids_, cat_ids_;
  Manifest manifest_;
};

TEST_F(DumpTest, FilesHoldExactlyWhatPullsSee) {
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/_SUCCESS"));
  EXPECT_EQ(manifest_.step, 42u);
  ASSERT_EQ(manifest_.tables.size(), 3u);
  EXPECT_NE(manifest_.config_text.find("name: \"item\""), std::string::npos);
  const std::vector<uint64_t>* ids_of[] = {&item_ids_, &cat_ids_, nullptr};
  for (int t = 0; t < 3; ++t) {
    const ManifestTable& mt = manifest_.tables[t];
    EXPECT_EQ(mt.name, cfg_.tables(t).name());
    EXPECT_EQ(mt.dim, cfg_.tables(t).dim());
    EXPECT_EQ(mt.shards, cfg_.tables(t).shards());
    const auto rows = ReadTable(dir_, mt);
    EXPECT_EQ(rows.size(), mt.rows);
    if (ids_of[t] == nullptr) {
      EXPECT_TRUE(rows.empty());
      continue;
    }
    ASSERT_EQ(rows.size(), ids_of[t]->size()) << mt.name;
    TablePull pulled = PullOne(*client_, t, *ids_of[t], wire::EVAL);
    for (size_t u = 0; u < pulled.unique_ids.size(); ++u) {
      auto it = rows.find(pulled.unique_ids[u]);
      ASSERT_NE(it, rows.end());
      EXPECT_EQ(0, std::memcmp(it->second.w.data(), &pulled.values[u * mt.dim], 4 * mt.dim))
          << mt.name << " id " << pulled.unique_ids[u];
      if (mt.counts) {
        EXPECT_EQ(it->second.count, pulled.counts[u]);
      }
    }
  }
}

TEST_F(DumpTest, NumpyLoadsEveryPart) {
  if (RunCommand("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0) {
    // tests/run.sh (DIN_CI=1) installs numpy: there, its absence is a failure.
    const char* ci = std::getenv("DIN_CI");
    ASSERT_FALSE(ci != nullptr && std::string(ci) == "1")
        << "/usr/bin/python3 with numpy is not available (launch/install-deps.sh installs it)";
    GTEST_SKIP() << "/usr/bin/python3 with numpy is not available";
  }
  std::string args;
  int parts = 0;
  for (const ManifestTable& t : manifest_.tables) {
    if (t.text) continue;
    for (const ManifestPart& p : t.parts) {
      const std::string stem = dir_ + "/" + t.name + "/" + DumpPartStem(p.shard, t.shards);
      const std::string n = std::to_string(p.rows);
      args += " " + stem + ".ids.npy:uint64:" + n;
      args += " " + stem + ".emb.npy:float32:" + n + "," + std::to_string(t.dim);
      if (t.counts) args += " " + stem + ".count.npy:uint32:" + n;
      ++parts;
    }
  }
  const std::string script =
      "import sys, numpy as np\n"
      "for spec in sys.argv[1:]:\n"
      "    path, dtype, shape = spec.split(':')\n"
      "    a = np.load(path)\n"
      "    want = tuple(int(x) for x in shape.split(','))\n"
      "    assert a.dtype == np.dtype(dtype), (path, a.dtype)\n"
      "    assert a.shape == want, (path, a.shape, want)\n"
      "print(len(sys.argv) - 1)\n";
  std::ofstream(dir_ + "_check.py") << script;
  std::string out;
  EXPECT_EQ(RunCommand("/usr/bin/python3 " + dir_ + "_check.py" + args, &out), 0) << out;
  EXPECT_EQ(std::stoi(out), parts * 2 + 5);  // item (5 parts) has counts
  std::filesystem::remove(dir_ + "_check.py");
}

// Rows per shard of `ids` over `shards` shards: "min A, max B, cv C" as inspect writes it,
// computed here from the IDs.
std::string ExpectedBalance(const std::vector<uint64_t>& ids, uint32_t shards) {
  std::vector<double> rows(shards, 0.0);
  for (uint64_t id : ids) rows[ShardOf(id, shards)] += 1;
  const double mean = static_cast<double>(ids.size()) / shards;
  double var = 0;
  for (double r : rows) var += (r - mean) * (r - mean) / shards;
  char buf[128];
  std::snprintf(buf, sizeof(buf), "rows per shard: min %.0f, max %.0f, cv %.4f",
                *std::min_element(rows.begin(), rows.end()),
                *std::max_element(rows.begin(), rows.end()), std::sqrt(var) / mean);
  return buf;
}

TEST_F(DumpTest, InspectReportsBalance) {
  std::string out;
  ASSERT_EQ(RunCommand(Tool("inspect " + dir_), &out), 0) << out;
  const std::string item_balance = ExpectedBalance(item_ids_, 5);
  EXPECT_NE(out.find("table item: dim 8, shards 5, rows 600, format npy + counts\n    " +
                     item_balance + "\n"),
            std::string::npos)
      << item_balance << "\n"
      << out;
  EXPECT_NE(out.find("table cat: dim 3, shards 3, rows 40, format text\n    " +
                     ExpectedBalance(cat_ids_, 3) + "\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("table user: dim 2, shards 1, rows 0, format npy\n"
                     "    rows per shard: min 0, max 0, cv 0.0000\n"),
            std::string::npos)
      << out;
  // A dump does not know its servers: bytes per server only with --servers.
  EXPECT_EQ(out.find("bytes per server"), std::string::npos) << out;

  // The job's placement (global shard g on server g mod S, tables in config order) and
  // the parts' file sizes on disk.
  for (int servers : {2, 3}) {
    std::vector<uint64_t> bytes(servers, 0);
    uint32_t global = 0;
    for (const ManifestTable& t : manifest_.tables)
      for (uint32_t shard = 0; shard < t.shards; ++shard, ++global)
        for (const auto& e : std::filesystem::directory_iterator(dir_ + "/" + t.name))
          if (e.path().filename().string().starts_with(DumpPartStem(shard, t.shards) + "."))
            bytes[global % servers] += std::filesystem::file_size(e.path());
    std::string want = "  dump bytes per server (";
    want += std::to_string(servers);
    want += " servers):";
    for (uint64_t b : bytes) want += ' ' + std::to_string(b);
    ASSERT_EQ(RunCommand(Tool("inspect " + dir_ + " --servers " + std::to_string(servers)), &out),
              0)
        << out;
    EXPECT_NE(out.find(want + "; max / min "), std::string::npos) << want << "\n" << out;
  }
  EXPECT_EQ(RunCommand(Tool("inspect " + dir_ + " --servers 0"), &out), 1);
  EXPECT_NE(out.find("--servers: '0' is not a number of servers"), std::string::npos) << out;
}

TEST_F(DumpTest, InspectPassesOnAGoodDumpAndFailsOnDamage) {
  std::string out;
  EXPECT_EQ(RunCommand(Tool("inspect " + dir_), &out), 0) << out;
  EXPECT_NE(out.find("table item: dim 8, shards 5, rows 600"), std::string::npos) << out;

  const std::string emb = "/item/part-00001-of-00005.emb.npy";
  const std::string truncated = Copy("truncated");
  std::filesystem::resize_file(truncated + emb, std::filesystem::file_size(truncated + emb) - 4);
  EXPECT_EQ(RunCommand(Tool("inspect " + truncated), &out), 1);
  EXPECT_NE(out.find("(truncated)"), std::string::npos) << out;

  const std::string flipped = Copy("flipped");
  {
    std::fstream f(flipped + emb, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(200);
    char c;
    f.get(c);
    f.seekp(200);
    f.put(static_cast<char>(c ^ 0x10));
  }
  EXPECT_EQ(RunCommand(Tool("inspect " + flipped), &out), 1);
  EXPECT_NE(out.find("checksum"), std::string::npos) << out;

  const std::string flipped_text = Copy("flipped_text");
  {
    std::fstream f(flipped_text + "/cat/part-00000-of-00003.txt",
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('#');
  }
  EXPECT_EQ(RunCommand(Tool("inspect " + flipped_text), &out), 1);
  EXPECT_NE(out.find("checksum"), std::string::npos) << out;

  const std::string unfinished = Copy("unfinished");
  std::filesystem::remove(unfinished + "/_SUCCESS");
  EXPECT_EQ(RunCommand(Tool("inspect " + unfinished), &out), 1);
  EXPECT_NE(out.find("_SUCCESS"), std::string::npos) << out;

  const std::string missing = Copy("missing");
  std::filesystem::remove(missing + "/item/part-00004-of-00005.count.npy");
  EXPECT_EQ(RunCommand(Tool("inspect " + missing), &out), 1);
  EXPECT_NE(out.find("cannot open"), std::string::npos) << out;

  for (const char* name : {"truncated", "flipped", "flipped_text", "unfinished", "missing"})
    std::filesystem::remove_all(dir_ + "_" + name);
}

// Parses "id<TAB>v1 v2 ..." lines into id -> values.
std::map<uint64_t, std::vector<float>> ParseLines(const std::string& text) {
  std::map<uint64_t, std::vector<float>> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    uint64_t id;
    ls >> id;
    std::string tok;
    while (ls >> tok && tok != "count") rows[id].push_back(std::stof(tok));
  }
  return rows;
}

TEST_F(DumpTest, LookupFindsIdsInEveryShard) {
  // IDs of every part of the 5-shard table, and of the text table.
  std::vector<uint64_t> want(item_ids_.begin(), item_ids_.begin() + 25);
  std::string list;
  for (uint64_t id : want) list += (list.empty() ? "" : ",") + std::to_string(id);
  std::string out;
  ASSERT_EQ(RunCommand(Tool("lookup " + dir_ + " --table item --ids " + list), &out), 0) << out;
  auto rows = ParseLines(out);
  ASSERT_EQ(rows.size(), want.size());
  TablePull pulled = PullOne(*client_, 0, want, wire::EVAL);
  for (size_t u = 0; u < pulled.unique_ids.size(); ++u) {
    const auto& got = rows[pulled.unique_ids[u]];
    ASSERT_EQ(got.size(), 8u);
    EXPECT_EQ(0, std::memcmp(got.data(), &pulled.values[u * 8], 32));
  }
  ASSERT_EQ(RunCommand(Tool("lookup " + dir_ + " --table cat --ids 8,15"), &out), 0);
  EXPECT_EQ(ParseLines(out).size(), 2u);
  EXPECT_EQ(RunCommand(Tool("lookup " + dir_ + " --table item --ids 3")), 1);  // never pulled
  EXPECT_EQ(RunCommand(Tool("lookup " + dir_ + " --table nosuch --ids 3")), 1);
}

TEST_F(DumpTest, ToTextPrintsEveryRow) {
  for (int t = 0; t < 2; ++t) {
    const ManifestTable& mt = manifest_.tables[t];
    std::string out;
    ASSERT_EQ(RunCommand(Tool("to-text " + dir_ + " --table " + mt.name), &out), 0);
    auto rows = ParseLines(out);
    auto want = ReadTable(dir_, mt);
    ASSERT_EQ(rows.size(), want.size());
    for (const auto& [id, r] : want) EXPECT_EQ(rows[id], r.w) << mt.name << " " << id;
  }
}

TEST_F(DumpTest, ServerErrorsNameTheFile) {
  std::ofstream(dir_ + "/plainfile") << "x";
  auto parts = client_->Dump(dir_ + "/plainfile/sub");
  ASSERT_FALSE(parts.ok());
  EXPECT_NE(parts.status().message().find("plainfile/sub"), std::string::npos)
      << parts.status().ToString();
  // The dump directory itself is refused by the worker before any server writes.
  Status st = DumpTables(*client_, cfg_, dir_ + "/plainfile/sub", 1);
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace din
