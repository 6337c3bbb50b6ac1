// What the DIN model reads: the embedding rows a pull returned (one row per distinct ID
// of each table) and, for every field occurrence of the batch, the index of its row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/batch.h"
#include "common/status.h"

namespace din::model {

// The distinct rows of one table that the batch uses: row-major [rows x dim] floats,
// owned by the caller (typically the PS client's pull buffer), alive during the call.
struct TableRows {
  const float* data = nullptr;
  uint32_t rows = 0;
  int dim = 0;
};

// One field's occurrences in CSR form: sample r owns occurrences
// [offsets[r], offsets[r + 1]); `rows[i]` is the row (in `tables[table]`) of occurrence i.
// Single-valued fields have offsets[r] == r.
struct FieldRows {
  int table = 0;
  std::vector<uint32_t> offsets{0};
  std::vector<uint32_t> rows;

  uint32_t length(size_t r) const { return offsets[r + 1] - offsets[r]; }
};

// One mini-batch as the model sees it. Field groups follow din::Batch: user-profile
// fields (multi-valued ones are sum-pooled, an empty one contributes zeros), candidate
// fields (exactly one ID per sample), behaviour fields (aligned one-to-one with the
// candidate fields, same tables, identical offsets; oldest first) and context fields
// (sum-pooled like user fields).
struct ModelInput {
  size_t batch_size = 0;
  std::vector<TableRows> tables;
  std::vector<FieldRows> user_fields;
  std::vector<FieldRows> candidate_fields;
  std::vector<FieldRows> behavior_fields;
  std::vector<FieldRows> context_fields;

  // Checks the structural contract above (sizes, offsets, row indices in range).
  Status Validate() const;
};

// Which table each field of a din::Batch reads, per group, in schema order.
struct FieldTables {
  std::vector<int> user;
  std::vector<int> candidate;  // behaviour fields use the same tables
  std::vector<int> context;
};

// Turns a din::Batch into a ModelInput: assigns every field occurrence the index of its
// ID among the distinct IDs of the field's table (first-occurrence order). The caller
// pulls the rows of unique_ids(t) and points input->tables[t].data at them.
//
// Reuses its hash maps and the ModelInput's vectors between batches. Not thread-safe.
class InputBuilder {
 public:
  InputBuilder(FieldTables tables, std::vector<int> table_dims);
  InputBuilder(const InputBuilder&) = delete;
  InputBuilder& operator=(const InputBuilder&) = delete;

  // Fills every field of *input and sets tables[t].rows and .dim (data stays null).
  Status Build(const Batch& batch, ModelInput* input);

  // Distinct IDs of table t in the last built batch; row i of the table belongs to
  // unique_ids(t)[i].
  std::span<const uint64_t> unique_ids(int t) const { return unique_[t]; }
  int num_tables() const { return static_cast<int>(table_dims_.size()); }

 private:
  Status AddColumn(const IdColumn& column, int table, size_t batch_size, FieldRows* out);

  FieldTables field_tables_;
  std::vector<int> table_dims_;
  std::vector<std::unordered_map<uint64_t, uint32_t>> index_;
  std::vector<std::vector<uint64_t>> unique_;
};

}  // namespace din::model
