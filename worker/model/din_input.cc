#include "worker/model/din_input.h"

#include <string>
#include <utility>

namespace din::model {
namespace {

Status ValidateGroup(const ModelInput& in, const std::vector<FieldRows>& group, const char* name,
                     bool single_valued) {
  for (size_t f = 0; f < group.size(); ++f) {
    const FieldRows& field = group[f];
    const std::string where = std::string(name) + " field " + std::to_string(f);
    if (field.table < 0 || field.table >= static_cast<int>(in.tables.size()))
      return Status::InvalidArgument(where + ": table index out of range");
    if (field.offsets.size() != in.batch_size + 1 || field.offsets[0] != 0)
      return Status::InvalidArgument(where + ": offsets must have batch_size + 1 entries from 0");
    for (size_t r = 0; r < in.batch_size; ++r) {
      if (field.offsets[r + 1] < field.offsets[r])
        return Status::InvalidArgument(where + ": offsets decrease");
      if (single_valued && field.offsets[r + 1] != r + 1)
        return Status::InvalidArgument(where + ": must hold exactly one ID per sample");
    }
    if (field.rows.size() != field.offsets.back())
      return Status::InvalidArgument(where + ": rows size differs from offsets.back()");
    const TableRows& table = in.tables[field.table];
    for (uint32_t row : field.rows)
      if (row >= table.rows)
        return Status::InvalidArgument(where + ": row index " + std::to_string(row) +
                                       " >= table rows " + std::to_string(table.rows));
  }
  return Status::Ok();
}

}  // namespace

Status ModelInput::Validate() const {
  for (size_t t = 0; t < tables.size(); ++t)
    if (tables[t].dim <= 0 || (tables[t].rows > 0 && tables[t].data == nullptr))
      return Status::InvalidArgument("table " + std::to_string(t) + " has no data or dim");
  if (behavior_fields.size() != candidate_fields.size())
    return Status::InvalidArgument("behaviour fields must align with candidate fields");
  DIN_RETURN_IF_ERROR(ValidateGroup(*this, user_fields, "user", false));
  DIN_RETURN_IF_ERROR(ValidateGroup(*this, candidate_fields, "candidate", true));
  DIN_RETURN_IF_ERROR(ValidateGroup(*this, behavior_fields, "behaviour", false));
  DIN_RETURN_IF_ERROR(ValidateGroup(*this, context_fields, "context", false));
  for (size_t f = 0; f < behavior_fields.size(); ++f) {
    if (behavior_fields[f].table != candidate_fields[f].table)
      return Status::InvalidArgument("behaviour field " + std::to_string(f) +
                                     " must use its candidate field's table");
    if (behavior_fields[f].offsets != behavior_fields[0].offsets)
      return Status::InvalidArgument("behaviour fields must have identical offsets");
  }
  return Status::Ok();
}

InputBuilder::InputBuilder(FieldTables tables, std::vector<int> table_dims)
    : field_tables_(std::move(tables)),
      table_dims_(std::move(table_dims)),
      index_(table_dims_.size()),
      unique_(table_dims_.size()) {}

Status InputBuilder::AddColumn(const IdColumn& column, int table, size_t batch_size,
                               FieldRows* out) {
  if (table < 0 || table >= num_tables())
    return Status::InvalidArgument("field table index " + std::to_string(table) + " out of range");
  if (column.samples() != batch_size)
    return Status::InvalidArgument("column has " + std::to_string(column.samples()) +
                                   " samples, batch has " + std::to_string(batch_size));
  out->table = table;
  out->offsets.assign(column.offsets.begin(), column.offsets.end());
  out->rows.resize(column.ids.size());
  auto& index = index_[table];
  auto& unique = unique_[table];
  for (size_t i = 0; i < column.ids.size(); ++i) {
    auto [it, inserted] = index.try_emplace(column.ids[i], static_cast<uint32_t>(unique.size()));
    if (inserted) unique.push_back(column.ids[i]);
    out->rows[i] = it->second;
  }
  return Status::Ok();
}

Status InputBuilder::Build(const Batch& batch, ModelInput* input) {
  if (batch.user_fields.size() != field_tables_.user.size() ||
      batch.candidate_fields.size() != field_tables_.candidate.size() ||
      batch.behavior_fields.size() != field_tables_.candidate.size() ||
      batch.context_fields.size() != field_tables_.context.size())
    return Status::InvalidArgument("batch fields do not match the model's field tables");
  for (int t = 0; t < num_tables(); ++t) {
    index_[t].clear();
    unique_[t].clear();
  }
  input->batch_size = batch.size;
  input->user_fields.resize(batch.user_fields.size());
  input->candidate_fields.resize(batch.candidate_fields.size());
  input->behavior_fields.resize(batch.behavior_fields.size());
  input->context_fields.resize(batch.context_fields.size());
  // Candidates first, so a batch's candidate items take the lowest rows.
  for (size_t f = 0; f < batch.candidate_fields.size(); ++f)
    DIN_RETURN_IF_ERROR(AddColumn(batch.candidate_fields[f], field_tables_.candidate[f], batch.size,
                                  &input->candidate_fields[f]));
  for (size_t f = 0; f < batch.behavior_fields.size(); ++f)
    DIN_RETURN_IF_ERROR(AddColumn(batch.behavior_fields[f], field_tables_.candidate[f], batch.size,
                                  &input->behavior_fields[f]));
  for (size_t f = 0; f < batch.user_fields.size(); ++f)
    DIN_RETURN_IF_ERROR(
        AddColumn(batch.user_fields[f], field_tables_.user[f], batch.size, &input->user_fields[f]));
  for (size_t f = 0; f < batch.context_fields.size(); ++f)
    DIN_RETURN_IF_ERROR(AddColumn(batch.context_fields[f], field_tables_.context[f], batch.size,
                                  &input->context_fields[f]));
  input->tables.resize(num_tables());
  for (int t = 0; t < num_tables(); ++t)
    input->tables[t] = TableRows{nullptr, static_cast<uint32_t>(unique_[t].size()), table_dims_[t]};
  return Status::Ok();
}

}  // namespace din::model
