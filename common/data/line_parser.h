// Parses one text line of the input into a row of a Batch (docs/design.md §7).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/batch.h"
#include "common/data/schema.h"
#include "common/status.h"

namespace din {

// Result of parsing one unsigned decimal.
enum class ParseIdError { kOk, kEmpty, kNotNumeric, kOutOfRange };

// Parses [begin, end) as an unsigned 64-bit decimal (digits only; no sign, no spaces).
ParseIdError ParseUint64(const char* begin, const char* end, uint64_t* out);

// Stateless after construction; the hot path allocates nothing (it appends to the
// Batch's reused buffers). Thread safety: const methods may run concurrently on
// different Batches.
class LineParser {
 public:
  // `schema` must outlive the parser. Behaviour lists keep at most `max_history`
  // newest entries (0 = no limit).
  LineParser(const Schema* schema, uint32_t max_history);

  // Appends the sample in `line` (without its '\n'; a trailing '\r' is dropped) to
  // `batch`, which must have been prepared by Schema::PrepareBatch. On failure the batch
  // is left exactly as it was and the InvalidArgument Status gives the reason, without
  // the file:line prefix (the reader adds it).
  Status Append(std::string_view line, Batch* batch) const;

 private:
  // What a column holds: the label, a field, or nothing the schema uses.
  struct ColumnRole {
    enum Kind : uint8_t { kIgnored, kLabel, kField } kind = kIgnored;
    const FieldSpec* field = nullptr;
    IdColumn* (*column)(Batch*, int) = nullptr;  // the field's column in a Batch
  };

  Status ParseField(const FieldSpec& field, const char* begin, const char* end,
                    IdColumn* column) const;

  const Schema* schema_;
  uint32_t max_history_;
  std::vector<ColumnRole> roles_;  // per column index
};

}  // namespace din
