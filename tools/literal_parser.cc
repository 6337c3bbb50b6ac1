#include "tools/literal_parser.h"

#include <cctype>
#include <cstdint>

namespace din {
namespace {

class LiteralParser {
 public:
  explicit LiteralParser(std::string_view text)
      : p_(text.data()), end_(text.data() + text.size()) {}

  bool ParseTop(LiteralValue* v, std::string* error) {
    if (!ParseValue(v, 0) || (SkipSpace(), p_ != end_)) {
      *error = error_.empty() ? "unexpected text after the value" : error_;
      return false;
    }
    return true;
  }

 private:
  void SkipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
  }
  bool Fail(const char* what) {
    if (error_.empty()) error_ = what;
    return false;
  }
  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xc0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xe0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      *out += static_cast<char>(0xf0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  bool Hex(int digits, uint32_t* out) {
    if (end_ - p_ < digits) return Fail("truncated escape");
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i, ++p_) {
      const char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        return Fail("bad hex escape");
    }
    *out = v;
    return true;
  }
  bool ParseString(std::string* out) {
    const char quote = *p_++;
    out->clear();
    while (p_ < end_ && *p_ != quote) {
      if (*p_ != '\\') {
        *out += *p_++;
        continue;
      }
      if (++p_ == end_) return Fail("truncated escape");
      const char c = *p_++;
      uint32_t cp;
      switch (c) {
        case 'n':
          *out += '\n';
          break;
        case 't':
          *out += '\t';
          break;
        case 'r':
          *out += '\r';
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'x':
          if (!Hex(2, &cp)) return false;
          AppendUtf8(cp, out);
          break;
        case 'u':
          if (!Hex(4, &cp)) return false;
          if (cp >= 0xd800 && cp < 0xdc00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            uint32_t lo;
            if (!Hex(4, &lo)) return false;
            if (lo >= 0xdc00 && lo < 0xe000) {
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else {  // not a pair: both as they are
              AppendUtf8(cp, out);
              cp = lo;
            }
          }
          AppendUtf8(cp, out);
          break;
        default:
          *out += c;  // \\ \" \' \/ and anything else literally
      }
    }
    if (p_ == end_) return Fail("unterminated string");
    ++p_;
    return true;
  }
  bool ParseValue(LiteralValue* v, int depth) {
    if (depth > 64) return Fail("nesting too deep");
    SkipSpace();
    if (p_ == end_) return Fail("unexpected end of line");
    const char c = *p_;
    if (c == '"' || c == '\'') {
      v->type = LiteralValue::kString;
      return ParseString(&v->str);
    }
    if (c == '{') {
      v->type = LiteralValue::kObject;
      ++p_;
      for (;;) {
        SkipSpace();
        if (p_ < end_ && *p_ == '}') {
          ++p_;
          return true;
        }
        if (p_ == end_ || (*p_ != '"' && *p_ != '\'')) return Fail("expected a quoted key");
        std::string key;
        if (!ParseString(&key)) return false;
        SkipSpace();
        if (p_ == end_ || *p_ != ':') return Fail("expected ':'");
        ++p_;
        v->members.emplace_back(std::move(key), LiteralValue());
        if (!ParseValue(&v->members.back().second, depth + 1)) return false;
        SkipSpace();
        if (p_ < end_ && *p_ == ',')
          ++p_;
        else if (p_ == end_ || *p_ != '}')
          return Fail("expected ',' or '}'");
      }
    }
    if (c == '[' || c == '(') {
      const char close = c == '[' ? ']' : ')';
      v->type = LiteralValue::kList;
      ++p_;
      for (;;) {
        SkipSpace();
        if (p_ < end_ && *p_ == close) {
          ++p_;
          return true;
        }
        v->items.emplace_back();
        if (!ParseValue(&v->items.back(), depth + 1)) return false;
        SkipSpace();
        if (p_ < end_ && *p_ == ',')
          ++p_;
        else if (p_ == end_ || *p_ != close)
          return Fail("expected ',' or the list's end");
      }
    }
    const char* start = p_;
    while (p_ < end_ && (std::isalnum(static_cast<unsigned char>(*p_)) || *p_ == '-' ||
                         *p_ == '+' || *p_ == '.'))
      ++p_;
    const std::string_view word(start, p_ - start);
    if (word == "true" || word == "True" || word == "false" || word == "False") {
      v->type = LiteralValue::kBool;
      v->str = word;
      return true;
    }
    if (word == "null" || word == "None") return true;
    if (!word.empty() && (std::isdigit(static_cast<unsigned char>(word[0])) || word[0] == '-' ||
                          word[0] == '+' || word[0] == '.')) {
      v->type = LiteralValue::kNumber;
      v->str = word;
      return true;
    }
    return Fail("unexpected character");
  }

  const char* p_;
  const char* end_;
  std::string error_;
};

}  // namespace

const LiteralValue* LiteralValue::Get(std::string_view key) const {
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

Result<LiteralValue> ParseLiteral(std::string_view text) {
  LiteralValue v;
  std::string error;
  if (!LiteralParser(text).ParseTop(&v, &error)) return Status::InvalidArgument(error);
  return v;
}

}  // namespace din
