#include "common/data/schema.h"

#include <algorithm>
#include <map>
#include <set>

namespace din {
namespace {

using config::FieldConfig;

FieldConfig Field(const char* name, uint32_t column, FieldConfig::Kind kind, const char* table,
                  const char* aligned_with = nullptr) {
  FieldConfig f;
  f.set_name(name);
  f.set_column(column);
  f.set_kind(kind);
  f.set_table(table);
  if (kind == FieldConfig::BEHAVIOR) {
    f.set_multi_valued(true);
    f.set_aligned_with(aligned_with);
  }
  return f;
}

}  // namespace

Schema Schema::DinTsv() {
  // Built once: every reader of a din-tsv input copies it.
  static const Schema* const din_tsv = [] { return new Schema(BuildDinTsv()); }();
  return *din_tsv;
}

Schema Schema::BuildDinTsv() {
  config::DataConfig cfg;
  cfg.set_format(config::DataConfig::SCHEMA);
  *cfg.add_fields() = Field("user", 1, FieldConfig::USER, "user");
  *cfg.add_fields() = Field("item", 2, FieldConfig::CANDIDATE, "item");
  *cfg.add_fields() = Field("cate", 3, FieldConfig::CANDIDATE, "cate");
  *cfg.add_fields() = Field("hist_items", 4, FieldConfig::BEHAVIOR, "item", "item");
  *cfg.add_fields() = Field("hist_cates", 5, FieldConfig::BEHAVIOR, "cate", "cate");
  cfg.set_num_columns(6);
  auto schema = FromConfig(cfg);
  CHECK(schema.ok()) << schema.status().ToString();
  return std::move(schema).value();
}

Result<Schema> Schema::FromConfig(const config::DataConfig& cfg) {
  if (cfg.format() == config::DataConfig::DIN_TSV) {
    if (cfg.fields_size() > 0)
      return Status::InvalidArgument(
          "data: fields are given but format is DIN_TSV; set format: SCHEMA to use them");
    Schema s = DinTsv();
    if (cfg.group_field() != "user") {
      // din-tsv with another (or no) GAUC key.
      config::DataConfig copy = cfg;
      copy.set_format(config::DataConfig::SCHEMA);
      copy.clear_fields();
      for (const auto* group : {&s.user_, &s.candidate_, &s.behavior_, &s.context_})
        for (const auto& f : *group) {
          auto* out = copy.add_fields();
          out->set_name(f.name);
          out->set_column(f.column);
          out->set_kind(f.kind);
          out->set_table(f.table);
          out->set_multi_valued(f.multi_valued);
          if (f.kind == FieldConfig::BEHAVIOR) out->set_aligned_with(s.candidate_[f.slot].name);
        }
      copy.set_num_columns(6);
      return FromConfig(copy);
    }
    if (cfg.column_separator() != "\t" || cfg.label_column() != 0 || cfg.num_columns() > 6)
      return Status::InvalidArgument(
          "data: din-tsv fixes label_column, num_columns and column_separator; use format: "
          "SCHEMA for another layout");
    return s;
  }

  Schema s;
  if (cfg.column_separator().size() != 1)
    return Status::InvalidArgument("data: column_separator must be exactly one byte");
  s.column_separator_ = cfg.column_separator()[0];
  if (s.column_separator_ == '\n' || s.column_separator_ == '\r')
    return Status::InvalidArgument("data: column_separator cannot be a line break");
  s.label_column_ = cfg.label_column();
  if (cfg.fields_size() == 0) return Status::InvalidArgument("data: format SCHEMA needs fields");

  std::set<std::string> names;
  std::set<uint32_t> columns{cfg.label_column()};
  uint32_t max_column = cfg.label_column();
  std::map<std::string, int> candidate_slot;
  std::vector<const FieldConfig*> behaviors;
  for (int i = 0; i < cfg.fields_size(); ++i) {
    const FieldConfig& f = cfg.fields(i);
    const std::string where = "data.fields[" + std::to_string(i) + "]";
    if (f.name().empty()) return Status::InvalidArgument(where + ": name is required");
    if (!names.insert(f.name()).second)
      return Status::InvalidArgument(where + ": duplicate field name '" + f.name() + "'");
    if (!f.has_column())
      return Status::InvalidArgument(where + " (" + f.name() + "): column is required");
    if (!columns.insert(f.column()).second)
      return Status::InvalidArgument(where + " (" + f.name() + "): column " +
                                     std::to_string(f.column()) +
                                     " is already used by the label or another field");
    max_column = std::max(max_column, f.column());
    if (f.separator().size() != 1)
      return Status::InvalidArgument(where + " (" + f.name() + "): separator must be one byte");
    if (f.separator()[0] == s.column_separator_)
      return Status::InvalidArgument(where + " (" + f.name() +
                                     "): separator equals the column separator");
    if (f.kind() == FieldConfig::BEHAVIOR) {
      behaviors.push_back(&f);
      continue;
    }
    if (f.kind() == FieldConfig::CANDIDATE && f.multi_valued())
      return Status::InvalidArgument(where + " (" + f.name() +
                                     "): a CANDIDATE field has exactly one ID");
    if (f.has_aligned_with())
      return Status::InvalidArgument(where + " (" + f.name() +
                                     "): aligned_with is only for BEHAVIOR fields");
    FieldSpec spec;
    spec.name = f.name();
    spec.table = f.table().empty() ? f.name() : f.table();
    spec.kind = f.kind();
    spec.column = f.column();
    spec.multi_valued = f.multi_valued();
    spec.separator = f.separator()[0];
    spec.hash = f.hash();
    std::vector<FieldSpec>* group = f.kind() == FieldConfig::USER        ? &s.user_
                                    : f.kind() == FieldConfig::CANDIDATE ? &s.candidate_
                                                                         : &s.context_;
    spec.slot = static_cast<int>(group->size());
    if (f.kind() == FieldConfig::CANDIDATE) candidate_slot[spec.name] = spec.slot;
    group->push_back(std::move(spec));
  }
  s.behavior_.resize(s.candidate_.size());
  std::vector<bool> aligned(s.candidate_.size(), false);
  for (const FieldConfig* f : behaviors) {
    auto it = candidate_slot.find(f->aligned_with());
    if (it == candidate_slot.end())
      return Status::InvalidArgument("data: behaviour field '" + f->name() +
                                     "' must name a CANDIDATE field in aligned_with, got '" +
                                     f->aligned_with() + "'");
    const FieldSpec& cand = s.candidate_[it->second];
    if (aligned[it->second])
      return Status::InvalidArgument("data: candidate field '" + cand.name +
                                     "' has more than one behaviour field");
    aligned[it->second] = true;
    if (!f->table().empty() && f->table() != cand.table)
      return Status::InvalidArgument("data: behaviour field '" + f->name() + "' uses table '" +
                                     f->table() + "' but its candidate '" + cand.name + "' uses '" +
                                     cand.table + "'");
    FieldSpec& spec = s.behavior_[it->second];
    spec.name = f->name();
    spec.table = cand.table;
    spec.kind = FieldConfig::BEHAVIOR;
    spec.column = f->column();
    spec.multi_valued = true;
    spec.separator = f->separator()[0];
    spec.hash = f->hash();
    spec.slot = it->second;
  }
  for (size_t i = 0; i < aligned.size(); ++i)
    if (!aligned[i])
      return Status::InvalidArgument("data: candidate field '" + s.candidate_[i].name +
                                     "' has no behaviour field (aligned_with)");

  s.num_columns_ = cfg.num_columns() == 0 ? max_column + 1 : cfg.num_columns();
  if (s.num_columns_ <= max_column)
    return Status::InvalidArgument("data: num_columns " + std::to_string(s.num_columns_) +
                                   " but column " + std::to_string(max_column) + " is used");

  if (!cfg.group_field().empty()) {
    bool found = false;
    for (const auto* group : {&s.user_, &s.candidate_, &s.behavior_, &s.context_})
      for (const auto& f : *group)
        if (f.name == cfg.group_field()) {
          s.group_kind_ = f.kind;
          s.group_slot_ = f.slot;
          found = true;
        }
    if (!found)
      return Status::InvalidArgument("data: group_field '" + cfg.group_field() +
                                     "' is not a field (set it to \"\" for none)");
  }
  return s;
}

const FieldSpec* Schema::group_field() const {
  switch (group_kind_) {
    case FieldConfig::USER:
      return &user_[group_slot_];
    case FieldConfig::CANDIDATE:
      return &candidate_[group_slot_];
    case FieldConfig::BEHAVIOR:
      return &behavior_[group_slot_];
    case FieldConfig::CONTEXT:
      return &context_[group_slot_];
    default:
      return nullptr;
  }
}

std::vector<std::string> Schema::Tables() const {
  std::vector<std::string> tables;
  for (const auto* group : {&user_, &candidate_, &behavior_, &context_})
    for (const auto& f : *group)
      if (std::find(tables.begin(), tables.end(), f.table) == tables.end())
        tables.push_back(f.table);
  return tables;
}

void Schema::PrepareBatch(Batch* batch) const {
  batch->user_fields.resize(user_.size());
  batch->candidate_fields.resize(candidate_.size());
  batch->behavior_fields.resize(behavior_.size());
  batch->context_fields.resize(context_.size());
  batch->Clear();
}

}  // namespace din
