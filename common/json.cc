#include "common/json.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

namespace din {

Json JsonNumber(double x, int decimals) {
  if (!std::isfinite(x)) return nullptr;
  const double scale = std::pow(10.0, decimals);
  const double r = std::round(x * scale) / scale;
  // Values too large to round keep their digits.
  return std::isfinite(r) ? r : x;
}

Json JsonRate(double amount, double seconds, int decimals) {
  if (!(amount > 0) || !(seconds > 0)) return nullptr;
  return JsonNumber(amount / seconds, decimals);
}

std::string JsonLine(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<Json> ParseJson(const std::string& text, const std::string& what) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument(what + ": not valid JSON");
  return j;
}

Result<Json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseJson(ss.str(), path);
}

}  // namespace din
