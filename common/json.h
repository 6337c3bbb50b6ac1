// JSON output and input through one library (nlohmann/json, Debian's
// nlohmann-json3-dev): the summary line, the metrics file, the tools' and benchmarks'
// result lines, and the files the tools write and read (bayes.json).
//
// Objects keep their keys in insertion order (ordered_json), so lines read in the order
// they are built. Strings are escaped by the library: a path with a quote, a backslash
// or a control character round-trips; bytes that are not UTF-8 become U+FFFD instead of
// an exception.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace din {

using Json = nlohmann::ordered_json;

// `x` rounded to `decimals` decimal places, or null when it is not finite (JSON has no
// NaN or infinity).
Json JsonNumber(double x, int decimals = 6);

// A rate `amount / seconds`, rounded to `decimals`, or null when there is no amount or
// no time to divide by: a rate over no work is not a number.
Json JsonRate(double amount, double seconds, int decimals = 1);

// `j` on one line (no newline).
std::string JsonLine(const Json& j);

// Parses `text` (from `what`, a file name for the error message).
Result<Json> ParseJson(const std::string& text, const std::string& what);

// Reads and parses the file at `path`.
Result<Json> ReadJsonFile(const std::string& path);

}  // namespace din
