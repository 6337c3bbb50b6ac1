// Schemas and batch helpers shared by the data fuzz harnesses.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>

#include <glog/logging.h>

#include "common/batch.h"
#include "common/data/schema.h"
#include "common/proto/data_config.pb.h"

namespace din::fuzz {

constexpr int kNumLayouts = 3;

// Layout 0: din-tsv. 1: a SCHEMA layout with hashed and multi-valued user fields, two
// candidate/behaviour pairs, a context field, an unused column and ' ' between columns.
// 2: din-tsv without a GAUC key.
inline config::DataConfig LayoutConfig(int layout) {
  config::DataConfig cfg;
  cfg.set_shuffle_buffer(0);
  cfg.set_max_bad_lines(uint64_t{1} << 40);
  if (layout == 2) cfg.set_group_field("");
  if (layout != 1) return cfg;
  cfg.set_format(config::DataConfig::SCHEMA);
  cfg.set_label_column(2);
  cfg.set_column_separator(" ");
  cfg.set_group_field("uid");
  cfg.set_num_columns(9);
  auto add = [&cfg](const char* name, uint32_t column, config::FieldConfig::Kind kind) {
    config::FieldConfig* f = cfg.add_fields();
    f->set_name(name);
    f->set_column(column);
    f->set_kind(kind);
    return f;
  };
  add("uid", 0, config::FieldConfig::USER)->set_hash(true);
  auto* profile = add("profile", 1, config::FieldConfig::USER);
  profile->set_multi_valued(true);
  profile->set_separator("|");
  add("item", 3, config::FieldConfig::CANDIDATE);
  add("shop", 4, config::FieldConfig::CANDIDATE);
  add("hist_items", 5, config::FieldConfig::BEHAVIOR)->set_aligned_with("item");
  add("hist_shops", 6, config::FieldConfig::BEHAVIOR)->set_aligned_with("shop");
  add("hour", 7, config::FieldConfig::CONTEXT)->set_hash(true);
  return cfg;
}

inline Schema LayoutSchema(int layout) {
  auto schema = Schema::FromConfig(LayoutConfig(layout));
  CHECK(schema.ok()) << schema.status().ToString();
  return std::move(schema).value();
}

// Appends the IDs of row r of `col`, separated by `sep`, to *s (in place: the fuzzers
// call this for every sample, and each temporary string is an allocation).
inline void AppendJoined(const IdColumn& col, size_t r, char sep, std::string* s) {
  char digits[24];
  for (uint32_t k = col.begin(r); k < col.end(r); ++k) {
    if (k > col.begin(r)) s->push_back(sep);
    const auto end = std::to_chars(digits, digits + sizeof(digits), col.ids[k]).ptr;
    s->append(digits, end);
  }
}

// Sample r as text: label|group key|user fields|candidates|behaviours|contexts.
inline std::string RowText(const Batch& b, size_t r) {
  std::string s = std::to_string(b.labels[r]);
  s.reserve(128);
  s += '|';
  s += std::to_string(b.users[r]);
  for (const auto* group :
       {&b.user_fields, &b.candidate_fields, &b.behavior_fields, &b.context_fields})
    for (const auto& col : *group) {
      s += '|';
      AppendJoined(col, r, ',', &s);
    }
  return s;
}

inline bool SameColumns(const std::vector<IdColumn>& a, const std::vector<IdColumn>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].ids != b[i].ids || a[i].offsets != b[i].offsets) return false;
  return true;
}

inline bool SameBatch(const Batch& a, const Batch& b) {
  return a.size == b.size && a.labels == b.labels && a.users == b.users &&
         SameColumns(a.user_fields, b.user_fields) &&
         SameColumns(a.candidate_fields, b.candidate_fields) &&
         SameColumns(a.behavior_fields, b.behavior_fields) &&
         SameColumns(a.context_fields, b.context_fields);
}

// The structure every parsed batch has (common/batch.h).
inline void CheckBatchShape(const Batch& b, uint32_t max_history) {
  CHECK_EQ(b.labels.size(), b.size);
  CHECK_EQ(b.users.size(), b.size);
  for (float label : b.labels) CHECK(label == 0.0f || label == 1.0f) << label;
  for (const auto* group :
       {&b.user_fields, &b.candidate_fields, &b.behavior_fields, &b.context_fields}) {
    for (const auto& col : *group) {
      CHECK_EQ(col.offsets.size(), b.size + 1);
      CHECK_EQ(col.offsets[0], 0u);
      for (size_t r = 0; r < b.size; ++r) CHECK_LE(col.offsets[r], col.offsets[r + 1]);
      CHECK_EQ(col.offsets.back(), col.ids.size());
    }
  }
  for (const auto& col : b.candidate_fields)
    for (size_t r = 0; r < b.size; ++r) CHECK_EQ(col.length(r), 1u);
  for (const auto& col : b.behavior_fields) {
    CHECK(col.offsets == b.behavior_fields[0].offsets) << "behaviour lists not aligned";
    for (size_t r = 0; r < b.size; ++r)
      if (max_history > 0) CHECK_LE(col.length(r), max_history);
  }
}

}  // namespace din::fuzz
