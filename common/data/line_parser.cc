#include "common/data/line_parser.h"

#include <cstring>
#include <string>

#include "common/hash.h"

namespace din {
namespace {

IdColumn* UserColumn(Batch* b, int i) { return &b->user_fields[i]; }
IdColumn* CandidateColumn(Batch* b, int i) { return &b->candidate_fields[i]; }
IdColumn* BehaviorColumn(Batch* b, int i) { return &b->behavior_fields[i]; }
IdColumn* ContextColumn(Batch* b, int i) { return &b->context_fields[i]; }

// A token for an error message: quoted, cut to a readable length.
std::string Quote(const char* begin, const char* end) {
  constexpr size_t kMax = 40;
  const size_t n = static_cast<size_t>(end - begin);
  std::string s = "'";
  s.append(begin, n > kMax ? kMax : n);
  if (n > kMax) s += "...";
  s += "'";
  return s;
}

std::string ColumnName(const FieldSpec& f) {
  return "column " + std::to_string(f.column + 1) + " (" + f.name + ")";
}

}  // namespace

ParseIdError ParseUint64(const char* begin, const char* end, uint64_t* out) {
  if (begin == end) return ParseIdError::kEmpty;
  uint64_t v = 0;
  bool overflow = false;
  for (const char* p = begin; p < end; ++p) {
    const unsigned d = static_cast<unsigned char>(*p) - '0';
    if (d > 9) return ParseIdError::kNotNumeric;
    overflow |= __builtin_mul_overflow(v, 10, &v);
    overflow |= __builtin_add_overflow(v, d, &v);
  }
  if (overflow) return ParseIdError::kOutOfRange;
  *out = v;
  return ParseIdError::kOk;
}

LineParser::LineParser(const Schema* schema, uint32_t max_history)
    : schema_(schema), max_history_(max_history), roles_(schema->num_columns()) {
  roles_[schema->label_column()].kind = ColumnRole::kLabel;
  auto add = [&](const std::vector<FieldSpec>& fields, IdColumn* (*column)(Batch*, int)) {
    for (const auto& f : fields) roles_[f.column] = {ColumnRole::kField, &f, column};
  };
  add(schema->users(), UserColumn);
  add(schema->candidates(), CandidateColumn);
  add(schema->behaviors(), BehaviorColumn);
  add(schema->contexts(), ContextColumn);
}

Status LineParser::ParseField(const FieldSpec& field, const char* begin, const char* end,
                              IdColumn* column) const {
  auto& ids = column->ids;
  if (!field.multi_valued) {
    uint64_t id;
    if (field.hash) {
      if (begin == end) return Status::InvalidArgument(ColumnName(field) + ": empty ID");
      id = HashToken(std::string_view(begin, end - begin));
    } else {
      switch (ParseUint64(begin, end, &id)) {
        case ParseIdError::kOk:
          break;
        case ParseIdError::kEmpty:
          return Status::InvalidArgument(ColumnName(field) + ": empty ID");
        case ParseIdError::kNotNumeric:
          return Status::InvalidArgument(ColumnName(field) + ": " + Quote(begin, end) +
                                         " is not an unsigned decimal ID");
        case ParseIdError::kOutOfRange:
          return Status::InvalidArgument(ColumnName(field) + ": " + Quote(begin, end) +
                                         " is out of the unsigned 64-bit range");
      }
    }
    ids.push_back(id);
    return Status::Ok();
  }
  if (begin == end) return Status::Ok();  // an empty list
  const char sep = field.separator;
  const char* p = begin;
  for (;;) {
    const char* token = p;
    uint64_t id = 0;
    if (field.hash) {
      const char* q = static_cast<const char*>(std::memchr(p, sep, end - p));
      p = q ? q : end;
      if (p == token) return Status::InvalidArgument(ColumnName(field) + ": empty ID in the list");
      id = HashToken(std::string_view(token, p - token));
    } else {
      // Fast path: up to 19 digits cannot overflow.
      while (p < end) {
        const unsigned d = static_cast<unsigned char>(*p) - '0';
        if (d > 9) break;
        id = id * 10 + d;
        ++p;
      }
      const size_t digits = static_cast<size_t>(p - token);
      if (digits == 0 || digits > 19 || (p < end && *p != sep)) {
        const char* q = static_cast<const char*>(std::memchr(p, sep, end - p));
        p = q ? q : end;
        switch (ParseUint64(token, p, &id)) {
          case ParseIdError::kOk:
            break;
          case ParseIdError::kEmpty:
            return Status::InvalidArgument(ColumnName(field) + ": empty ID in the list");
          case ParseIdError::kNotNumeric:
            return Status::InvalidArgument(ColumnName(field) + ": " + Quote(token, p) +
                                           " is not an unsigned decimal ID");
          case ParseIdError::kOutOfRange:
            return Status::InvalidArgument(ColumnName(field) + ": " + Quote(token, p) +
                                           " is out of the unsigned 64-bit range");
        }
      }
    }
    ids.push_back(id);
    if (p == end) break;
    ++p;  // the separator; a trailing one leaves an empty token, reported above
    if (p == end) return Status::InvalidArgument(ColumnName(field) + ": empty ID in the list");
  }
  return Status::Ok();
}

Status LineParser::Append(std::string_view line, Batch* batch) const {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const char sep = schema_->column_separator();
  const char* const line_end = line.data() + line.size();

  // Every column's ids grow past offsets.back() while the line is parsed; the offsets
  // are pushed only once the whole line is good, so undoing is a resize.
  auto rollback = [&] {
    for (auto* group : {&batch->user_fields, &batch->candidate_fields, &batch->behavior_fields,
                        &batch->context_fields})
      for (auto& col : *group) col.ids.resize(col.offsets.back());
  };

  // A missing or extra column shifts every later one: then the column count is the
  // error a user needs to see, whatever else failed first.
  auto count_error = [&]() -> Status {
    size_t columns = 1;
    for (const char* p = line.data();; ++columns) {
      p = static_cast<const char*>(std::memchr(p, sep, line_end - p));
      if (!p) break;
      ++p;
    }
    if (columns == roles_.size()) return Status::Ok();
    return Status::InvalidArgument("expected " + std::to_string(roles_.size()) + " columns, got " +
                                   std::to_string(columns));
  };
  auto fail = [&](Status st) -> Status {
    rollback();
    Status count = count_error();
    if (count.ok()) return st;
    return count;
  };

  float label = 0;
  const char* p = line.data();
  for (size_t c = 0; c < roles_.size(); ++c) {
    const char* q = static_cast<const char*>(std::memchr(p, sep, line_end - p));
    const bool last = c + 1 == roles_.size();
    if (!q != last) return fail(count_error());
    const char* col_end = q ? q : line_end;
    const ColumnRole& role = roles_[c];
    if (role.kind == ColumnRole::kLabel) {
      if (col_end - p == 1 && (*p == '0' || *p == '1')) {
        label = *p == '1' ? 1.0f : 0.0f;
      } else {
        return fail(Status::InvalidArgument("column " + std::to_string(c + 1) +
                                            " (label): must be 0 or 1, got " + Quote(p, col_end)));
      }
    } else if (role.kind == ColumnRole::kField) {
      Status st = ParseField(*role.field, p, col_end, role.column(batch, role.field->slot));
      if (!st.ok()) return fail(std::move(st));
    }
    p = col_end + 1;
  }

  // Behaviour lists: equal lengths, then keep the newest max_history.
  auto& behaviors = batch->behavior_fields;
  if (!behaviors.empty()) {
    const size_t len = behaviors[0].ids.size() - behaviors[0].offsets.back();
    for (size_t i = 1; i < behaviors.size(); ++i) {
      const size_t len_i = behaviors[i].ids.size() - behaviors[i].offsets.back();
      if (len_i != len) {
        const auto& f = schema_->behaviors();
        return fail(Status::InvalidArgument("behaviour lists of unequal length: " + f[0].name +
                                            " has " + std::to_string(len) + ", " + f[i].name +
                                            " has " + std::to_string(len_i)));
      }
    }
    if (max_history_ > 0 && len > max_history_) {
      const size_t drop = len - max_history_;
      for (auto& col : behaviors) {
        auto first = col.ids.begin() + col.offsets.back();
        col.ids.erase(first, first + drop);
      }
    }
  }

  for (auto* group : {&batch->user_fields, &batch->candidate_fields, &batch->behavior_fields,
                      &batch->context_fields})
    for (auto& col : *group) col.offsets.push_back(static_cast<uint32_t>(col.ids.size()));
  uint64_t user = 0;
  if (const FieldSpec* g = schema_->group_field()) {
    IdColumn* col = roles_[g->column].column(batch, g->slot);
    const size_t r = col->samples() - 1;
    if (col->length(r) > 0) user = col->ids[col->begin(r)];
  }
  batch->labels.push_back(label);
  batch->users.push_back(user);
  ++batch->size;
  return Status::Ok();
}

}  // namespace din
