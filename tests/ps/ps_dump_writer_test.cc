// The dump file format (XXH64, NPY headers, MANIFEST) and DumpShard on a ShardStore.
#include "ps/dump_writer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "common/dump_format.h"
#include "common/hash.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::ReadFile;
using test::TempDir;

TEST(Xxh64Test, KnownVectors) {
  EXPECT_EQ(Xxh64::Of("", 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(Xxh64::Of("a", 1), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(Xxh64::Of("abc", 3), 0x44bc2cf5ad770999ULL);
  const std::string s = "Nobody inspects the spammish repetition";
  EXPECT_EQ(Xxh64::Of(s.data(), s.size()), 0xfbcea83c8a378bf1ULL);
}

TEST(Xxh64Test, AnySplitGivesTheSameDigest) {
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(Mix64(i));
  const uint64_t whole = Xxh64::Of(data.data(), data.size());
  for (size_t step : {1, 3, 7, 31, 32, 33, 100, 999}) {
    Xxh64 h;
    for (size_t i = 0; i < data.size(); i += step)
      h.Update(data.data() + i, std::min(step, data.size() - i));
    EXPECT_EQ(h.Digest(), whole) << "step " << step;
  }
}

TEST(NpyTest, HeaderRoundTripAndAlignment) {
  for (const auto& shape : std::vector<std::vector<uint64_t>>{{0}, {7}, {12345678901ULL, 16}}) {
    const std::string h = NpyHeader("<f4", shape);
    EXPECT_EQ(h.size() % 64, 0u);
    EXPECT_EQ(h.back(), '\n');
    auto info = ParseNpyHeader(h, "test");
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->descr, "<f4");
    EXPECT_EQ(info->shape, shape);
    EXPECT_EQ(info->header_bytes, h.size());
    EXPECT_EQ(info->item_bytes(), 4u);
  }
  EXPECT_NE(NpyHeader("<u8", {5}).find("'shape': (5,)"), std::string::npos);
  EXPECT_FALSE(ParseNpyHeader("not npy at all", "x").ok());
}

TEST(ManifestTest, RoundTrip) {
  Manifest m;
  m.step = 77;
  ManifestTable t;
  t.name = "item";
  t.dim = 8;
  t.shards = 2;
  t.rows = 3;
  t.counts = true;
  t.parts = {{0, 1, {{"item/part-00000-of-00002.ids.npy", 136, 0x0123456789abcdefULL}}},
             {1, 2, {{"item/part-00001-of-00002.ids.npy", 144, 0xfedcba9876543210ULL}}}};
  m.tables.push_back(t);
  m.config_text = "tables {\n  name: \"item\"\n}\n";
  const std::string text = FormatManifest(m);
  auto back = ParseManifest(text, "MANIFEST");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(FormatManifest(*back), text);
  EXPECT_EQ(back->step, 77u);
  EXPECT_EQ(back->config_text, m.config_text);
  ASSERT_NE(back->Find("item"), nullptr);
  EXPECT_EQ(back->Find("item")->parts[1].files[0].xxh64, 0xfedcba9876543210ULL);
  EXPECT_FALSE(ParseManifest("din-dump 1\ntable item dim 8 shards 2 rows 0 format npy counts 0\n",
                             "M")
                   .ok());  // parts missing
}

TEST(DumpShardTest, TableNamesThatCannotBeDirectories) {
  EXPECT_TRUE(CheckDumpTableName("item_v2").ok());
  for (const char* bad : {"", ".", "..", "a/b", "a b", "tab\there"})
    EXPECT_FALSE(CheckDumpTableName(bad).ok()) << bad;
}

void Fill(ShardStore* store, uint32_t shard, uint32_t shards, int n) {
  int made = 0;
  for (uint64_t id = 1; made < n; ++id) {
    if (ShardOf(id, shards) != shard) continue;
    bool inserted = false;
    auto row = store->FindOrInsert(id, &inserted);
    ASSERT_TRUE(row.ok());
    for (uint32_t d = 0; d < store->dim(); ++d)
      store->Weights(*row)[d] = static_cast<float>(UniformAt(id, d)) - 0.5f;
    store->SetCount(*row, static_cast<uint32_t>(id % 13));
    ++made;
  }
}

TEST(DumpShardTest, NpyPartsHoldTheRowsInCreationOrder) {
  const TempDir tmp("din_dump_writer_npy");
  const std::string& dir = tmp.path();
  ShardStore store(5, 2);
  // More rows than one writer buffer holds, so the buffered path is exercised.
  Fill(&store, 2, 3, 70000);
  ShardDumpSpec spec{dir, "item", 2, 3, false, true};
  auto files = DumpShard(store, spec);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].name, "item/part-00002-of-00003.ids.npy");
  EXPECT_EQ((*files)[1].name, "item/part-00002-of-00003.emb.npy");
  EXPECT_EQ((*files)[2].name, "item/part-00002-of-00003.count.npy");
  for (const auto& f : *files) {
    const std::string bytes = ReadFile(dir + "/" + f.name);
    EXPECT_EQ(bytes.size(), f.bytes);
    EXPECT_EQ(Xxh64::Of(bytes.data(), bytes.size()), f.xxh64);
  }
  const std::string ids = ReadFile(dir + "/" + (*files)[0].name);
  const std::string emb = ReadFile(dir + "/" + (*files)[1].name);
  const std::string cnt = ReadFile(dir + "/" + (*files)[2].name);
  auto ih = ParseNpyHeader(ids, "ids");
  auto eh = ParseNpyHeader(emb, "emb");
  auto ch = ParseNpyHeader(cnt, "cnt");
  ASSERT_TRUE(ih.ok() && eh.ok() && ch.ok());
  EXPECT_EQ(ih->descr, "<u8");
  EXPECT_EQ(eh->shape, (std::vector<uint64_t>{70000, 5}));
  EXPECT_EQ(ch->descr, "<u4");
  for (uint32_t r = 0; r < store.size(); ++r) {
    uint64_t id;
    uint32_t count;
    std::memcpy(&id, ids.data() + ih->header_bytes + 8 * r, 8);
    std::memcpy(&count, cnt.data() + ch->header_bytes + 4 * r, 4);
    ASSERT_EQ(id, store.Key(r));
    ASSERT_EQ(count, store.Count(r));
    ASSERT_EQ(0, std::memcmp(emb.data() + eh->header_bytes + 20 * size_t{r}, store.Weights(r), 20));
  }
}

// A half-precision shard written as a checkpoint and loaded into a fresh store of the
// same format gets back every stored bit (weights, state, count), and its .emb.npy holds
// the float32 values of the stored weights.
// A delta of an incremental series: the kept rows (new since the mark, or changed) with
// their row numbers in .rows.npy, a freed row number taken again by a new key included,
// and the erased IDs in .removed.npy, in erase order.
TEST(DumpShardTest, SeriesDeltaListsRowNumbersAndRemovedIds) {
  const TempDir tmp("din_dump_writer_delta");
  const std::string& dir = tmp.path();
  ShardStore store(2, 0);
  auto insert = [&](uint64_t key) {
    bool inserted = false;
    Result<uint32_t> row = store.FindOrInsert(key, &inserted);
    EXPECT_TRUE(row.ok() && inserted);
    const float w[2] = {static_cast<float>(key), -1.0f};
    store.SetWeights(*row, w);
    return *row;
  };
  for (uint64_t k = 0; k < 6; ++k) insert(100 + k);  // rows 0..5; the mark is at 6
  store.TrackErased(true);
  store.Erase(store.Find(101));
  store.Erase(store.Find(104));
  const uint32_t reused = insert(900);  // takes row 4 (last freed, first reused)
  EXPECT_EQ(reused, 4u);
  EXPECT_EQ(insert(901), 1u);  // the other freed number
  EXPECT_EQ(insert(902), 6u);  // new since the mark
  std::vector<uint8_t> changed(6, 0);
  changed[2] = 1;  // pushed since the mark
  // A new row in a freed number is marked changed (LaneHandler::Materialize).
  changed[reused] = changed[1] = 1;
  ShardDumpSpec spec{dir, "item", 0, 1};
  spec.delta = true;
  spec.changed = &changed;
  spec.first_new = 6;
  spec.row_numbers = true;
  spec.removed = &store.erased_keys();
  auto files = DumpShard(store, spec);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 4u);
  EXPECT_EQ((*files)[2].name, "item/part-00000-of-00001.rows.npy");
  EXPECT_EQ((*files)[3].name, "item/part-00000-of-00001.removed.npy");
  for (const auto& f : *files) {
    const std::string bytes = ReadFile(dir + "/" + f.name);
    EXPECT_EQ(bytes.size(), f.bytes);
    EXPECT_EQ(Xxh64::Of(bytes.data(), bytes.size()), f.xxh64);
  }
  auto array = [&](size_t i, const char* descr, auto zero) {
    const std::string bytes = ReadFile(dir + "/" + (*files)[i].name);
    auto h = ParseNpyHeader(bytes, (*files)[i].name);
    EXPECT_TRUE(h.ok() && h->descr == descr);
    std::vector<decltype(zero)> out(h->shape[0]);
    std::memcpy(out.data(), bytes.data() + h->header_bytes, out.size() * sizeof(zero));
    return out;
  };
  // Row-number order, as a full dump writes them.
  EXPECT_EQ(array(0, "<u8", uint64_t{0}), (std::vector<uint64_t>{901, 102, 900, 902}));
  EXPECT_EQ(array(2, "<u4", uint32_t{0}), (std::vector<uint32_t>{1, 2, 4, 6}));
  EXPECT_EQ(array(3, "<u8", uint64_t{0}), (std::vector<uint64_t>{101, 104}));
}

TEST(DumpShardTest, HalfCheckpointRestoresTheStoredBitsExactly) {
  for (WeightFormat format : {WeightFormat::kFp16, WeightFormat::kBf16}) {
    const TempDir tmp("din_dump_writer_half");
    const std::string& dir = tmp.path();
    constexpr uint32_t kDim = 6;
    ShardStore store(kDim, 1, 0, 0, format);
    std::vector<float> w(kDim);
    for (uint64_t id = 1; store.size() < 3000; ++id) {
      if (ShardOf(id, 2) != 1) continue;
      bool inserted = false;
      const uint32_t row = *store.FindOrInsert(id, &inserted);
      for (uint32_t d = 0; d < kDim; ++d)
        w[d] = (static_cast<float>(UniformAt(id, d)) - 0.5f) * 1e-2f;
      store.SetWeightsRounded(row, w.data(), id);  // bits no nearest rounding would give
      store.State(row)[0] = static_cast<float>(UniformAt(id, 99));
      store.SetCount(row, static_cast<uint32_t>(id % 13));
    }
    ShardDumpSpec spec{dir, "item", 1, 2, false, false, true};
    auto files = DumpShard(store, spec);
    ASSERT_TRUE(files.ok()) << files.status().ToString();
    const std::string emb = ReadFile(dir + "/" + (*files)[1].name);
    auto eh = ParseNpyHeader(emb, "emb");
    ASSERT_TRUE(eh.ok());
    EXPECT_EQ(eh->descr, "<f4");
    for (uint32_t r = 0; r < store.size(); ++r) {
      store.GetWeights(r, w.data());
      ASSERT_EQ(0, std::memcmp(emb.data() + eh->header_bytes + r * kDim * 4, w.data(), kDim * 4));
    }
    ManifestTable table;
    table.name = "item";
    table.dim = kDim;
    table.shards = 2;
    table.rows = store.size();
    table.state_floats = 1;
    table.optimizer = "rowwise_adagrad";
    table.parts.resize(2);
    table.parts[1].shard = 1;
    table.parts[1].rows = store.size();
    table.parts[1].files = *files;
    ShardStore restored(kDim, 1, 0, 0, format);
    auto loaded = LoadCheckpointPart(dir, table, table.parts[1], {nullptr, &restored});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    ASSERT_EQ(*loaded, store.size());
    ASSERT_EQ(restored.size(), store.size());
    for (uint32_t r = 0; r < store.size(); ++r) {
      ASSERT_EQ(restored.Key(r), store.Key(r));
      ASSERT_EQ(restored.Count(r), store.Count(r));
      ASSERT_EQ(0, std::memcmp(restored.WeightData(r), store.WeightData(r), kDim * 2))
          << WeightFormatName(format) << " row " << r;
      ASSERT_EQ(restored.State(r)[0], store.State(r)[0]);
    }
  }
}

TEST(DumpShardTest, EmptyShardAndTextForm) {
  const TempDir tmp("din_dump_writer_text");
  const std::string& dir = tmp.path();
  ShardStore empty(4, 0);
  auto files = DumpShard(empty, {dir, "e", 0, 1, false, false});
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  auto eh = ParseNpyHeader(ReadFile(dir + "/e/part-00000-of-00001.emb.npy"), "emb");
  ASSERT_TRUE(eh.ok());
  EXPECT_EQ(eh->shape, (std::vector<uint64_t>{0, 4}));

  ShardStore store(3, 0);
  Fill(&store, 0, 1, 50);
  files = DumpShard(store, {dir, "t", 0, 1, true, false});
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].name, "t/part-00000-of-00001.txt");
  std::istringstream in(ReadFile(dir + "/t/part-00000-of-00001.txt"));
  std::string line;
  uint32_t r = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    uint64_t id;
    ls >> id;
    EXPECT_EQ(id, store.Key(r));
    EXPECT_EQ(line[line.find_first_not_of("0123456789")], '\t');
    for (uint32_t d = 0; d < 3; ++d) {
      std::string tok;
      ls >> tok;
      EXPECT_EQ(std::stof(tok), store.Weights(r)[d]) << line;  // shortest exact form
    }
    ++r;
  }
  EXPECT_EQ(r, 50u);
}

TEST(DumpShardTest, UnwritableDirectoryNamesThePath) {
  const TempDir tmp("din_dump_writer_bad");
  const std::string& dir = tmp.path();
  std::ofstream(dir + "/file") << "x";
  ShardStore store(2, 0);
  auto files = DumpShard(store, {dir + "/file", "t", 0, 1, false, false});
  ASSERT_FALSE(files.ok());
  EXPECT_NE(files.status().message().find(dir + "/file"), std::string::npos)
      << files.status().ToString();
}

TEST(DumpFileWriterTest, WriteErrorsSurfaceWithThePath) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  auto writer = DumpFileWriter::Create("/dev/full");
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  std::vector<char> block(DumpFileWriter::kBufferBytes / 3 + 5, 'x');
  Status st;
  for (int i = 0; i < 12 && st.ok(); ++i) st = (*writer)->Append(block.data(), block.size());
  if (st.ok()) st = (*writer)->Close();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/dev/full"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace din
