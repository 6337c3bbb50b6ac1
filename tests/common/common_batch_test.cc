// Batch::AppendSample: copies one sample of every column, keeping the CSR offsets.
#include "common/batch.h"

#include <vector>

#include <gtest/gtest.h>

namespace din {
namespace {

// Two samples: user fields {one ID, a multi-valued list}, one candidate, a behaviour
// list, a context.
Batch Source() {
  Batch b;
  b.size = 2;
  b.labels = {1, 0};
  b.users = {7, 8};
  b.user_fields.resize(2);
  b.user_fields[0].ids = {7, 8};
  b.user_fields[0].offsets = {0, 1, 2};
  b.user_fields[1].ids = {3, 4, 5};
  b.user_fields[1].offsets = {0, 0, 3};
  b.candidate_fields.resize(1);
  b.candidate_fields[0].ids = {100, 101};
  b.candidate_fields[0].offsets = {0, 1, 2};
  b.behavior_fields.resize(1);
  b.behavior_fields[0].ids = {1, 2, 9};
  b.behavior_fields[0].offsets = {0, 2, 3};
  b.context_fields.resize(1);
  b.context_fields[0].ids = {20, 21};
  b.context_fields[0].offsets = {0, 1, 2};
  return b;
}

TEST(BatchTest, AppendSampleCopiesEveryColumn) {
  const Batch from = Source();
  Batch to = Source();
  to.AppendSample(from, 1);
  to.AppendSample(from, 0);
  to.AppendSample(from, 1);
  EXPECT_EQ(to.size, 5u);
  EXPECT_EQ(to.labels, (std::vector<float>{1, 0, 0, 1, 0}));
  EXPECT_EQ(to.users, (std::vector<uint64_t>{7, 8, 8, 7, 8}));
  EXPECT_EQ(to.user_fields[0].ids, (std::vector<uint64_t>{7, 8, 8, 7, 8}));
  EXPECT_EQ(to.user_fields[1].ids, (std::vector<uint64_t>{3, 4, 5, 3, 4, 5, 3, 4, 5}));
  EXPECT_EQ(to.user_fields[1].offsets, (std::vector<uint32_t>{0, 0, 3, 6, 6, 9}));
  EXPECT_EQ(to.candidate_fields[0].ids, (std::vector<uint64_t>{100, 101, 101, 100, 101}));
  EXPECT_EQ(to.behavior_fields[0].ids, (std::vector<uint64_t>{1, 2, 9, 9, 1, 2, 9}));
  EXPECT_EQ(to.behavior_fields[0].offsets, (std::vector<uint32_t>{0, 2, 3, 4, 6, 7}));
  EXPECT_EQ(to.context_fields[0].ids, (std::vector<uint64_t>{20, 21, 21, 20, 21}));
  for (const auto* group :
       {&to.user_fields, &to.candidate_fields, &to.behavior_fields, &to.context_fields})
    for (const auto& col : *group) EXPECT_EQ(col.samples(), to.size);
  // Into a cleared batch.
  to.Clear();
  to.AppendSample(from, 1);
  EXPECT_EQ(to.size, 1u);
  EXPECT_EQ(to.behavior_fields[0].ids, (std::vector<uint64_t>{9}));
  EXPECT_EQ(to.behavior_fields[0].offsets, (std::vector<uint32_t>{0, 1}));
}

}  // namespace
}  // namespace din
