// StepReader: the global batches are the same for every worker count, each line comes
// once per epoch, partitions are near-equal byte ranges, save/restore mid shuffle block,
// refusals (W > V, a state of another W or V), file order without shuffling.
#include "common/data/step_reader.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/data/partition.h"
#include "tests/testing/files.h"
#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::TempDir;
using test::WriteFile;

// A din-tsv input whose line `id` has user `id` (so every sample names its line), item
// id + 1000000 and a history of (id * 7) % 23 entries, so line lengths vary. The
// lines' first-byte offsets in the concatenation of the files are kept, to tell
// independently of the reader which partition a line belongs to.
struct Input {
  TempDir dir;
  std::string path;
  std::vector<uint64_t> offsets;  // by id: first byte in the concatenated input
  std::vector<uint64_t> lengths;  // by id: bytes with the line break
  uint64_t total = 0;

  // `files` line counts, files named in order; one file is written as the path itself.
  explicit Input(const std::vector<int>& files) {
    path = files.size() == 1 ? dir / "train.tsv" : dir / "d";
    uint64_t id = 0;
    for (size_t f = 0; f < files.size(); ++f) {
      std::string text;
      for (int i = 0; i < files[f]; ++i, ++id) {
        std::string hist, cates;
        for (uint64_t j = 0; j < (id * 7) % 23; ++j) {
          hist += (j ? "," : "") + std::to_string(id * 100 + j);
          cates += (j ? "," : "") + std::to_string(j % 9);
        }
        const std::string line = std::to_string(id % 2) + "\t" + std::to_string(id) + "\t" +
                                 std::to_string(id + 1000000) + "\t" + std::to_string(id % 7) +
                                 "\t" + hist + "\t" + cates + "\n";
        offsets.push_back(total + text.size());
        lengths.push_back(line.size());
        text += line;
      }
      total += text.size();
      WriteFile(files.size() == 1 ? path : path + "/part-" + std::to_string(100 + f), text);
    }
  }
  size_t lines() const { return offsets.size(); }
  // The partition (of `parts` equal byte ranges) holding line `id`'s first byte.
  uint32_t PartitionOf(uint64_t id, uint32_t parts) const {
    for (uint32_t v = 0; v < parts; ++v) {
      const uint64_t hi =
          static_cast<uint64_t>(static_cast<unsigned __int128>(total) * (v + 1) / parts);
      if (offsets[id] < hi) return v;
    }
    return parts;
  }
};

config::DataConfig Config(const Input& in, uint32_t batch, uint32_t partitions, uint32_t shuffle) {
  config::DataConfig cfg;
  cfg.set_batch_size(batch);
  cfg.set_partitions(partitions);
  cfg.set_shuffle_buffer(shuffle);
  cfg.set_seed(7);
  cfg.set_train_path(in.path);
  return cfg;
}

std::vector<std::unique_ptr<StepReader>> OpenAll(const config::DataConfig& cfg, int workers) {
  std::vector<std::unique_ptr<StepReader>> readers;
  for (int w = 0; w < workers; ++w) {
    auto r = StepReader::Open(cfg, w, workers);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    readers.push_back(std::move(r).value());
  }
  return readers;
}

// One step of one worker: the sample ids per partition, from last_step_counts(); also
// checks that every sample's fields are those of its line.
void SplitShare(const StepReader& reader, const Batch& batch,
                std::map<uint32_t, std::vector<uint64_t>>* by_partition) {
  size_t r = 0;
  for (size_t i = 0; i < reader.owned_partitions().size(); ++i) {
    auto& ids = (*by_partition)[reader.owned_partitions()[i]];
    for (uint32_t k = 0; k < reader.last_step_counts()[i]; ++k, ++r) {
      ASSERT_LT(r, batch.size);
      ids.push_back(batch.users[r]);
      ASSERT_EQ(batch.candidate_fields[0].ids[r], batch.users[r] + 1000000);
      ASSERT_EQ(batch.behavior_fields[0].length(r), (batch.users[r] * 7) % 23);
    }
  }
  ASSERT_EQ(r, batch.size);
}

// One epoch of W workers: the global batches, each as (partition, sample id) in
// partition order. Checks on the way: a worker's full share is share_of_step(), a worker
// whose NextStep returned false keeps returning false, each partition contributes its
// b_v until it runs out, and the reader attributes every sample to the partition whose
// byte range holds the line.
using Step = std::vector<std::pair<uint32_t, uint64_t>>;
std::vector<Step> ReadEpoch(const Input& in, std::vector<std::unique_ptr<StepReader>>& readers) {
  const uint32_t V = readers[0]->partitions(), B = readers[0]->global_batch();
  std::vector<Step> steps;
  std::vector<bool> done(readers.size(), false);
  std::vector<bool> exhausted(V, false);
  for (;;) {
    std::map<uint32_t, std::vector<uint64_t>> by_partition;
    bool any = false;
    for (size_t w = 0; w < readers.size(); ++w) {
      Batch batch;
      auto more = readers[w]->NextStep(&batch);
      EXPECT_TRUE(more.ok()) << more.status().ToString();
      if (!more.ok()) return {};
      EXPECT_EQ(*more, batch.size > 0);
      EXPECT_FALSE(done[w] && *more) << "worker " << w << " came back after false";
      done[w] = done[w] || !*more;
      any = any || *more;
      SplitShare(*readers[w], batch, &by_partition);
    }
    if (!any) break;
    Step step;
    for (const auto& [v, ids] : by_partition) {
      const size_t b_v = B / V + (v < B % V ? 1 : 0);
      EXPECT_LE(ids.size(), b_v);
      EXPECT_FALSE(exhausted[v] && !ids.empty()) << "partition " << v << " came back";
      if (ids.size() < b_v) exhausted[v] = true;
      for (uint64_t id : ids) {
        EXPECT_EQ(in.PartitionOf(id, V), v) << "sample " << id;
        step.push_back({v, id});
      }
    }
    steps.push_back(std::move(step));
  }
  for (auto& r : readers) r->StartNextEpoch();
  return steps;
}

std::vector<uint64_t> Ids(const std::vector<Step>& steps) {
  std::vector<uint64_t> ids;
  for (const auto& s : steps)
    for (const auto& [v, id] : s) ids.push_back(id);
  return ids;
}

TEST(StepReaderTest, GlobalBatchesDoNotDependOnWorkerCount) {
  Input in({3000});
  struct Case {
    uint32_t batch, partitions, shuffle;
  };
  // V = 8 with an uneven split (b_v = 3 or 2), the automatic V (= 20 = B, and 64 for
  // B = 100), and no shuffling.
  for (const Case c : {Case{20, 8, 200}, Case{20, 0, 200}, Case{100, 0, 1000}, Case{20, 8, 0}}) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + " partitions " +
                 std::to_string(c.partitions) + " shuffle " + std::to_string(c.shuffle));
    const auto cfg = Config(in, c.batch, c.partitions, c.shuffle);
    const uint32_t V = StepPartitions(cfg);
    EXPECT_EQ(V, c.partitions ? c.partitions : std::min(64u, c.batch));
    std::vector<std::vector<Step>> base;  // W = 1, per epoch
    for (int W : {1, 2, 3, 4}) {
      SCOPED_TRACE("workers " + std::to_string(W));
      auto readers = OpenAll(cfg, W);
      ASSERT_EQ(readers.size(), static_cast<size_t>(W));
      uint32_t shares = 0;
      for (const auto& r : readers) {
        EXPECT_EQ(r->partitions(), V);
        shares += r->share_of_step();
      }
      EXPECT_EQ(shares, c.batch);
      for (int epoch = 0; epoch < 2; ++epoch) {
        std::vector<Step> steps = ReadEpoch(in, readers);
        ASSERT_FALSE(steps.empty());
        EXPECT_EQ(steps[0].size(), c.batch);
        std::vector<uint64_t> ids = Ids(steps);
        std::sort(ids.begin(), ids.end());
        ASSERT_EQ(ids.size(), in.lines());
        for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], i) << "epoch " << epoch;
        if (W == 1) {
          base.push_back(steps);
          continue;
        }
        ASSERT_EQ(steps.size(), base[epoch].size()) << "epoch " << epoch;
        for (size_t t = 0; t < steps.size(); ++t)
          ASSERT_EQ(steps[t], base[epoch][t]) << "epoch " << epoch << " step " << t;
      }
      for (const auto& r : readers) EXPECT_EQ(r->epoch(), 2u);
    }
    ASSERT_EQ(base.size(), 2u);
    if (c.shuffle > 1)
      EXPECT_NE(Ids(base[0]), Ids(base[1]));
    else
      EXPECT_EQ(Ids(base[0]), Ids(base[1]));
  }
}

TEST(StepReaderTest, PartitionsAreNearEqualByteRanges) {
  // Files of very different sizes: whole files could not balance 8 partitions.
  Input in({40, 1500, 7, 300, 1, 900});
  uint64_t longest = 0;
  for (uint64_t n : in.lengths) longest = std::max(longest, n);
  for (uint32_t V : {3u, 8u, 16u}) {
    SCOPED_TRACE("partitions " + std::to_string(V));
    auto readers = OpenAll(Config(in, 64, V, 0), 2);
    ASSERT_EQ(readers.size(), 2u);
    std::vector<uint64_t> bytes(V, 0);
    uint64_t lines = 0;
    for (const Step& step : ReadEpoch(in, readers))
      for (const auto& [v, id] : step) {
        bytes[v] += in.lengths[id];
        ++lines;
      }
    EXPECT_EQ(lines, in.lines());
    // Each partition reads the lines starting in its range: within one line of total / V.
    for (uint32_t v = 0; v < V; ++v) {
      EXPECT_LE(bytes[v], in.total / V + longest + 1) << "partition " << v;
      EXPECT_GE(bytes[v] + longest + 1, in.total / V) << "partition " << v;
    }
    // The segments themselves: exactly equal cuts, covering every byte once.
    uint64_t covered = 0;
    for (uint32_t v = 0; v < V; ++v) {
      uint64_t size = 0;
      for (const Segment& s : PartitionByteRanges(readers[0]->files(), v, V))
        size += s.end - s.begin;
      EXPECT_LE(size, in.total / V + 1);
      EXPECT_GE(size, in.total / V);
      covered += size;
    }
    EXPECT_EQ(covered, in.total);
  }
}

// Without shuffling each partition streams its lines in file order.
TEST(StepReaderTest, FileOrderWithoutShuffling) {
  Input in({700, 500});
  for (uint32_t shuffle : {0u, 1u}) {
    auto readers = OpenAll(Config(in, 20, 8, shuffle), 3);
    ASSERT_EQ(readers.size(), 3u);
    std::map<uint32_t, std::vector<uint64_t>> streams;
    for (const Step& step : ReadEpoch(in, readers))
      for (const auto& [v, id] : step) streams[v].push_back(id);
    for (uint32_t v = 0; v < 8; ++v) {
      std::vector<uint64_t> want;
      for (uint64_t id = 0; id < in.lines(); ++id)
        if (in.PartitionOf(id, 8) == v) want.push_back(id);
      EXPECT_EQ(streams[v], want) << "shuffle " << shuffle << " partition " << v;
    }
  }
}

// With shuffling, partition v returns its lines in blocks of max(2, shuffle_buffer / V)
// consecutive lines, each block in a random order.
TEST(StepReaderTest, ShuffleBlocksOfShuffleBufferOverPartitions) {
  Input in({1200});
  for (uint32_t shuffle : {200u, 10u}) {
    const size_t block = std::max(2u, shuffle / 8);
    auto readers = OpenAll(Config(in, 20, 8, shuffle), 2);
    ASSERT_EQ(readers.size(), 2u);
    std::map<uint32_t, std::vector<uint64_t>> streams;
    for (const Step& step : ReadEpoch(in, readers))
      for (const auto& [v, id] : step) streams[v].push_back(id);
    size_t shuffled_blocks = 0;
    for (uint32_t v = 0; v < 8; ++v) {
      std::vector<uint64_t> want;
      for (uint64_t id = 0; id < in.lines(); ++id)
        if (in.PartitionOf(id, 8) == v) want.push_back(id);
      ASSERT_EQ(streams[v].size(), want.size());
      for (size_t b = 0; b < want.size(); b += block) {
        const size_t e = std::min(want.size(), b + block);
        std::vector<uint64_t> got(streams[v].begin() + b, streams[v].begin() + e);
        shuffled_blocks += !std::equal(got.begin(), got.end(), want.begin() + b);
        std::sort(got.begin(), got.end());
        ASSERT_TRUE(std::equal(got.begin(), got.end(), want.begin() + b))
            << "shuffle " << shuffle << " partition " << v << " block at " << b;
      }
    }
    EXPECT_GT(shuffled_blocks, 0u) << "shuffle " << shuffle;
  }
}

// Restoring a saved position mid-epoch (and mid shuffle block) gives the same shares as
// not stopping, across the epoch boundary.
TEST(StepReaderTest, SaveRestoreContinuesIdentically) {
  Input in({900, 400});
  // b_v = 3 or 2 samples a step from blocks of 25: most cuts are mid-block.
  const auto cfg = Config(in, 20, 8, 200);
  for (int W : {1, 3}) {
    for (int w = 0; w < W; ++w) {
      for (int cut : {1, 5, 13, 64, 70}) {  // an epoch is about 65 steps
        SCOPED_TRACE("worker " + std::to_string(w) + "/" + std::to_string(W) + " cut " +
                     std::to_string(cut));
        auto a = std::move(StepReader::Open(cfg, w, W)).value();
        Batch batch;
        for (int t = 0; t < cut; ++t) {
          auto more = a->NextStep(&batch);
          ASSERT_TRUE(more.ok());
          if (!*more) a->StartNextEpoch();
        }
        const std::string state = a->SaveState();
        auto b = std::move(StepReader::Open(cfg, w, W)).value();
        ASSERT_TRUE(b->RestoreState(state).ok());
        EXPECT_EQ(b->epoch(), a->epoch());
        EXPECT_EQ(b->samples_in_epoch(), a->samples_in_epoch());
        for (int t = 0; t < 100; ++t) {
          Batch x, y;
          auto mx = a->NextStep(&x), my = b->NextStep(&y);
          ASSERT_TRUE(mx.ok() && my.ok());
          ASSERT_EQ(*mx, *my);
          ASSERT_EQ(x.users, y.users) << "step " << t;
          ASSERT_EQ(x.behavior_fields[0].ids, y.behavior_fields[0].ids);
          ASSERT_EQ(a->last_step_counts(), b->last_step_counts());
          if (!*mx) {
            a->StartNextEpoch();
            b->StartNextEpoch();
          }
        }
      }
    }
  }
  // Another worker count (another partition set), another V, another seed: refused.
  auto w0of2 = std::move(StepReader::Open(cfg, 0, 2)).value();
  auto w0of3 = std::move(StepReader::Open(cfg, 0, 3)).value();
  Status st = w0of3->RestoreState(w0of2->SaveState());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("holds partitions {0,2,4,6} but this worker reads {0,3,6}"),
            std::string::npos)
      << st.message();
  auto v4 = std::move(StepReader::Open(Config(in, 20, 4, 200), 0, 2)).value();
  st = v4->RestoreState(w0of2->SaveState());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("data.partitions = 8, this reader has 4"), std::string::npos)
      << st.message();
  auto seeded = Config(in, 20, 8, 200);
  seeded.set_seed(8);
  auto other = std::move(StepReader::Open(seeded, 0, 2)).value();
  EXPECT_FALSE(other->RestoreState(w0of2->SaveState()).ok());
  EXPECT_FALSE(w0of2->RestoreState("garbage").ok());
  EXPECT_TRUE(w0of2->RestoreState(w0of2->SaveState()).ok());
}

TEST(StepReaderTest, RefusesMoreWorkersThanPartitionsAndMorePartitionsThanBatch) {
  Input in({50});
  auto r = StepReader::Open(Config(in, 20, 4, 0), 0, 5);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data.partitions"), std::string::npos);
  EXPECT_NE(r.status().message().find("for 5 workers"), std::string::npos) << r.status().message();
  EXPECT_TRUE(StepReader::Open(Config(in, 20, 4, 0), 3, 4).ok());
  // The automatic V = min(64, batch_size) = 2.
  r = StepReader::Open(Config(in, 2, 0, 0), 0, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data.partitions: 2 partitions (automatic"),
            std::string::npos)
      << r.status().message();
  r = StepReader::Open(Config(in, 20, 21, 0), 0, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "data: partitions (21) must be at most batch_size (20): every partition "
            "contributes to every step");
}

// max_bad_lines holds per partition reader; the counts and messages add up.
TEST(StepReaderTest, BadLinesPerPartition) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += (i == 10 || i == 390 ? "x" : "1") + std::string("\t") + std::to_string(i) +
            "\t5\t6\t1,2\t3,4\n";
  WriteFile(dir / "f.tsv", text);
  config::DataConfig cfg;
  cfg.set_batch_size(8);
  cfg.set_partitions(4);
  cfg.set_shuffle_buffer(0);
  cfg.set_train_path(dir / "f.tsv");
  cfg.set_max_bad_lines(1);
  auto reader = std::move(StepReader::Open(cfg, 0, 1)).value();
  Batch batch;
  uint64_t samples = 0;
  for (;;) {
    auto more = reader->NextStep(&batch);
    ASSERT_TRUE(more.ok()) << more.status().ToString();
    if (!*more) break;
    samples += batch.size;
  }
  EXPECT_EQ(samples, 398u);
  EXPECT_EQ(reader->samples_in_epoch(), 398u);
  EXPECT_EQ(reader->bad_lines(), 2u);
  const auto messages = reader->bad_line_messages();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_NE(messages[0].find("f.tsv:11:"), std::string::npos) << messages[0];
  EXPECT_NE(messages[1].find("f.tsv:391:"), std::string::npos) << messages[1];
  // Two bad lines in one partition exceed the limit of that partition.
  text[text.find("\n1\t11\t") + 1] = 'x';
  WriteFile(dir / "f.tsv", text);
  reader = std::move(StepReader::Open(cfg, 0, 1)).value();
  Status st;
  for (;;) {
    auto more = reader->NextStep(&batch);
    if (!more.ok()) {
      st = more.status();
      break;
    }
    if (!*more) break;
  }
  EXPECT_NE(st.message().find("f.tsv:12:"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("more than max_bad_lines=1"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace din
