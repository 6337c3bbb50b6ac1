// ParseLiteral: a small reader of one JSON value or Python literal, as found one per line
// in the Amazon review and metadata files (din_convert amazon).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace din {

struct LiteralValue {
  enum Type { kNull, kBool, kNumber, kString, kList, kObject };
  Type type = kNull;
  // kString: the decoded text (escapes resolved, \u and \x as UTF-8); kNumber and kBool:
  // the literal's own text ("-1.5e3", "True"), not checked beyond its characters.
  std::string str;
  std::vector<LiteralValue> items;                            // kList
  std::vector<std::pair<std::string, LiteralValue>> members;  // kObject, in text order

  // The first member named `key`, or null.
  const LiteralValue* Get(std::string_view key) const;
};

// Parses `text` as exactly one value, with optional whitespace (space, tab, CR, LF) around
// it and between tokens. Accepted: JSON, and Python's single-quoted strings, True/False/
// None and tuples (read as lists); objects keep duplicate keys in order. Numbers are runs
// of letters, digits and "+-." that start with a digit, a sign or a point. Nesting deeper
// than 64 levels is refused. On failure, InvalidArgument with a short reason
// ("unterminated string", "expected ':'", ...) and no position.
Result<LiteralValue> ParseLiteral(std::string_view text);

}  // namespace din
