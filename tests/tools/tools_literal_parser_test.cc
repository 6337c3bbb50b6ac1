// ParseLiteral (tools/literal_parser.h): the JSON and Python-literal forms it accepts,
// the forms it refuses with their messages, and edge cases (empty input, whitespace,
// nesting depth, escapes, long numbers).
#include "tools/literal_parser.h"

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace din {
namespace {

LiteralValue ParseOk(std::string_view text) {
  Result<LiteralValue> v = ParseLiteral(text);
  EXPECT_TRUE(v.ok()) << "'" << text << "': " << v.status().ToString();
  return v.ok() ? *v : LiteralValue();
}

// The message of a refused text ("" if it was accepted).
std::string Error(std::string_view text) {
  Result<LiteralValue> v = ParseLiteral(text);
  if (v.ok()) return "";
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  return v.status().message();
}

TEST(LiteralParserTest, JsonObject) {
  const LiteralValue v =
      ParseOk(R"({"reviewerID": "A2", "asin": "0001", "overall": 5.0, "helpful": [0, 1],)"
              R"( "verified": true, "vote": null, "unixReviewTime": 1382486400})");
  ASSERT_EQ(v.type, LiteralValue::kObject);
  ASSERT_EQ(v.members.size(), 7u);
  EXPECT_EQ(v.members[0].first, "reviewerID");  // text order
  EXPECT_EQ(v.members[6].first, "unixReviewTime");
  ASSERT_NE(v.Get("asin"), nullptr);
  EXPECT_EQ(v.Get("asin")->type, LiteralValue::kString);
  EXPECT_EQ(v.Get("asin")->str, "0001");
  EXPECT_EQ(v.Get("overall")->type, LiteralValue::kNumber);
  EXPECT_EQ(v.Get("overall")->str, "5.0");
  EXPECT_EQ(v.Get("unixReviewTime")->str, "1382486400");
  const LiteralValue* helpful = v.Get("helpful");
  ASSERT_EQ(helpful->type, LiteralValue::kList);
  ASSERT_EQ(helpful->items.size(), 2u);
  EXPECT_EQ(helpful->items[1].str, "1");
  EXPECT_EQ(v.Get("verified")->type, LiteralValue::kBool);
  EXPECT_EQ(v.Get("verified")->str, "true");
  EXPECT_EQ(v.Get("vote")->type, LiteralValue::kNull);
  EXPECT_EQ(v.Get("missing"), nullptr);
}

TEST(LiteralParserTest, PythonLiteral) {
  const LiteralValue v = ParseOk(
      "{'asin': '0078764343', 'categories': [['Video Games', 'Xbox 360'], ['Games']], "
      "'related': ('a', \"b\"), 'ok': True, 'bad': False, 'price': None}");
  ASSERT_EQ(v.type, LiteralValue::kObject);
  EXPECT_EQ(v.Get("asin")->str, "0078764343");
  const LiteralValue* cats = v.Get("categories");
  ASSERT_EQ(cats->type, LiteralValue::kList);
  ASSERT_EQ(cats->items.size(), 2u);
  ASSERT_EQ(cats->items[0].items.size(), 2u);
  EXPECT_EQ(cats->items[0].items[1].str, "Xbox 360");
  const LiteralValue* related = v.Get("related");  // a tuple reads as a list
  ASSERT_EQ(related->type, LiteralValue::kList);
  ASSERT_EQ(related->items.size(), 2u);
  EXPECT_EQ(related->items[1].str, "b");
  EXPECT_EQ(v.Get("ok")->type, LiteralValue::kBool);
  EXPECT_EQ(v.Get("ok")->str, "True");
  EXPECT_EQ(v.Get("bad")->str, "False");
  EXPECT_EQ(v.Get("price")->type, LiteralValue::kNull);
}

TEST(LiteralParserTest, ScalarsAtTopLevel) {
  EXPECT_EQ(ParseOk("'x'").type, LiteralValue::kString);
  EXPECT_EQ(ParseOk("null").type, LiteralValue::kNull);
  EXPECT_EQ(ParseOk("None").type, LiteralValue::kNull);
  EXPECT_EQ(ParseOk("false").type, LiteralValue::kBool);
  for (const char* number : {"0", "-12", "+3", ".5", "1e-7", "6.02E+23", "-Infinity"}) {
    const LiteralValue v = ParseOk(number);
    EXPECT_EQ(v.type, LiteralValue::kNumber) << number;
    EXPECT_EQ(v.str, number);
  }
}

TEST(LiteralParserTest, NumbersKeepTheirTextWithoutOverflow) {
  // Far beyond 64 bits: kept as text; whoever converts it decides.
  const std::string big = "123456789012345678901234567890123456789";
  EXPECT_EQ(ParseOk(big).str, big);
  EXPECT_EQ(ParseOk("[" + big + "]").items.at(0).str, big);
  // Only the characters are checked, not the number's shape.
  EXPECT_EQ(ParseOk("1.2.3").str, "1.2.3");
  EXPECT_EQ(ParseOk("0x1F").str, "0x1F");
}

TEST(LiteralParserTest, EmptyContainersAndDuplicateKeys) {
  EXPECT_TRUE(ParseOk("{}").members.empty());
  EXPECT_TRUE(ParseOk("[]").items.empty());
  EXPECT_TRUE(ParseOk("()").items.empty());
  EXPECT_EQ(ParseOk("''").str, "");
  const LiteralValue v = ParseOk("{'a': 1, 'a': 2}");
  ASSERT_EQ(v.members.size(), 2u);
  EXPECT_EQ(v.Get("a")->str, "1");  // the first one
}

TEST(LiteralParserTest, TrailingCommasAreAccepted) {
  EXPECT_EQ(ParseOk("[1, 2,]").items.size(), 2u);
  EXPECT_EQ(ParseOk("{'a': 1,}").members.size(), 1u);
  EXPECT_EQ(ParseOk("(1,)").items.size(), 1u);
}

TEST(LiteralParserTest, Whitespace) {
  const LiteralValue v = ParseOk(" \t{ 'a' :\t[ 1 ,\r\n2 ] }\r\n ");
  ASSERT_EQ(v.type, LiteralValue::kObject);
  EXPECT_EQ(v.Get("a")->items.size(), 2u);
  EXPECT_EQ(ParseOk("  7  ").str, "7");
  EXPECT_EQ(ParseOk("' keep  spaces '").str, " keep  spaces ");
}

TEST(LiteralParserTest, StringEscapes) {
  EXPECT_EQ(ParseOk(R"("a\nb\tc\rd\be\ff")").str, "a\nb\tc\rd\be\ff");
  EXPECT_EQ(ParseOk(R"("q\"q\\q\/q")").str, "q\"q\\q/q");
  EXPECT_EQ(ParseOk(R"('it\'s')").str, "it's");
  EXPECT_EQ(ParseOk(R"('say "hi"')").str, "say \"hi\"");  // the other quote needs no escape
  EXPECT_EQ(ParseOk(R"("\q")").str, "q");                 // unknown escapes: the character
  // \u and \x as UTF-8: 1, 2 and 3 bytes, a surrogate pair as 4 bytes.
  EXPECT_EQ(ParseOk(R"("\u0041\u00e9\u20ac")").str, "A\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(ParseOk(R"("\ud83d\ude00")").str, "\xf0\x9f\x98\x80");
  EXPECT_EQ(ParseOk(R"('\xe9\x41')").str,
            "\xc3\xa9"
            "A");
  EXPECT_EQ(ParseOk(R"("\u00C9")").str, "\xc3\x89");  // upper-case hex
}

TEST(LiteralParserTest, UnpairedSurrogatesStayAsTheyAre) {
  // A high surrogate without a low one: each code unit on its own (3 bytes each).
  EXPECT_EQ(ParseOk(R"("\ud83dx")").str, "\xed\xa0\xbdx");
  EXPECT_EQ(ParseOk(R"("\ud83d\u0041")").str,
            "\xed\xa0\xbd"
            "A");
}

TEST(LiteralParserTest, RefusedFormsAndTheirMessages) {
  EXPECT_EQ(Error(""), "unexpected end of line");
  EXPECT_EQ(Error("   "), "unexpected end of line");
  EXPECT_EQ(Error("[1, "), "unexpected end of line");
  EXPECT_EQ(Error("{'a': }"), "unexpected character");
  EXPECT_EQ(Error("@"), "unexpected character");
  EXPECT_EQ(Error("nope"), "unexpected character");
  EXPECT_EQ(Error("NaN"), "unexpected character");
  EXPECT_EQ(Error("{'a': 1} x"), "unexpected text after the value");
  EXPECT_EQ(Error("1 2"), "unexpected text after the value");
  EXPECT_EQ(Error("{'a': 1}}"), "unexpected text after the value");
  EXPECT_EQ(Error("'abc"), "unterminated string");
  EXPECT_EQ(Error("\"abc'"), "unterminated string");
  EXPECT_EQ(Error("{a: 1}"), "expected a quoted key");
  EXPECT_EQ(Error("{1: 'x'}"), "expected a quoted key");
  EXPECT_EQ(Error("{'a' 1}"), "expected ':'");
  EXPECT_EQ(Error("{'a': 1 'b': 2}"), "expected ',' or '}'");
  EXPECT_EQ(Error("{'a': 1"), "expected ',' or '}'");
  EXPECT_EQ(Error("[1 2]"), "expected ',' or the list's end");
  EXPECT_EQ(Error("[1)"), "expected ',' or the list's end");
  EXPECT_EQ(Error("(1]"), "expected ',' or the list's end");
  EXPECT_EQ(Error(R"("\u12xy")"), "bad hex escape");
  EXPECT_EQ(Error(R"("\u12")"), "truncated escape");  // 3 characters left, 4 needed
  EXPECT_EQ(Error(R"("\uZZZZ")"), "bad hex escape");
  EXPECT_EQ(Error(R"('\xg0')"), "bad hex escape");
  EXPECT_EQ(Error(R"("\ud83d\uZZZZ")"), "bad hex escape");
  EXPECT_EQ(Error("'abc\\"), "truncated escape");
}

TEST(LiteralParserTest, NestingDepthLimit) {
  // The outermost value is at depth 0; a value deeper than 64 is refused.
  const auto nested = [](int levels) {
    return std::string(levels, '[') + std::string(levels, ']');
  };
  EXPECT_EQ(Error(nested(65)), "");
  EXPECT_EQ(Error(nested(66)), "nesting too deep");
  EXPECT_EQ(Error(std::string(100000, '[')), "nesting too deep");
  EXPECT_EQ(Error("{'a': " + nested(65) + "}"), "nesting too deep");
}

}  // namespace
}  // namespace din
