// The input layout a reader parses: which column is the label and which columns hold
// which ID fields (docs/design.md §7). Built from DataConfig; din-tsv when no fields are given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/batch.h"
#include "common/proto/data_config.pb.h"
#include "common/status.h"

namespace din {

// One ID column, resolved.
struct FieldSpec {
  std::string name;
  std::string table;
  config::FieldConfig::Kind kind = config::FieldConfig::USER;
  uint32_t column = 0;
  bool multi_valued = false;  // always true for behaviours, false for candidates
  char separator = ',';
  bool hash = false;
  // Index of this field in its Batch group (user_fields, candidate_fields, ...). For a
  // behaviour it equals the index of the candidate field it aligns with.
  int slot = 0;
};

class Schema {
 public:
  // Resolves and validates the layout: unique names and columns, column separator of one
  // byte, every candidate field with exactly one aligned behaviour field of the same
  // table, group_field naming a field (or empty).
  static Result<Schema> FromConfig(const config::DataConfig& cfg);

  // The din-tsv layout: label user item cate hist_items hist_cates.
  static Schema DinTsv();

  uint32_t num_columns() const { return num_columns_; }
  uint32_t label_column() const { return label_column_; }
  char column_separator() const { return column_separator_; }

  // Fields per Batch group, in Batch order; behaviors()[i] aligns with candidates()[i].
  const std::vector<FieldSpec>& users() const { return user_; }
  const std::vector<FieldSpec>& candidates() const { return candidate_; }
  const std::vector<FieldSpec>& behaviors() const { return behavior_; }
  const std::vector<FieldSpec>& contexts() const { return context_; }

  // The field whose (first) ID is the GAUC key, or nullptr (then Batch::users holds 0).
  const FieldSpec* group_field() const;

  // The distinct table names, in order of first appearance (users, candidates,
  // behaviours, contexts).
  std::vector<std::string> Tables() const;

  // Sizes the Batch groups for this schema and clears it (keeps buffer capacity).
  void PrepareBatch(Batch* batch) const;

 private:
  static Schema BuildDinTsv();
  uint32_t num_columns_ = 0;
  uint32_t label_column_ = 0;
  char column_separator_ = '\t';
  std::vector<FieldSpec> user_, candidate_, behavior_, context_;
  // Kind and slot of the GAUC key field; kind < 0 = none.
  int group_kind_ = -1;
  int group_slot_ = 0;
};

}  // namespace din
