// din_convert: real datasets -> din-tsv (docs/design.md §7), OUT/train.tsv and OUT/test.tsv.
//
//   din_convert movielens DIR OUT [--seed 1] [--test-fraction 0.2] [--max-history 50]
//     DIR holds ml-latest(-small) (ratings.csv, movies.csv), ml-1m (ratings.dat,
//     movies.dat) or ml-100k (u.data, u.item). The paper's protocol: label = rating >= 4;
//     one row per rating; behaviours = the user's movies rated before it, in time order
//     (ties by movie ID); category = the movie's first genre, a fixed ID per genre name
//     (kGenres below; other names hash to 1000 + HashToken(name) % 10^9); users go to the
//     test split with probability --test-fraction, decided by (seed, user) alone.
//
//   din_convert amazon REVIEWS META OUT [--seed 1] [--max-history 50]
//     REVIEWS: the 5-core review file, one JSON object per line (reviewerID, asin,
//     unixReviewTime); META: one object per line (asin and categories: list of lists,
//     or category: list), JSON or Python-literal style (single quotes). The DIN
//     authors' protocol: each user's reviews sorted by time; for every position i >= 1
//     a positive (the reviewed item) and a negative (a uniformly drawn item the user
//     never reviewed) with the history before i; the user's last position goes to
//     test, the others to train; category = the last category of the item's last
//     category list. Users, items and categories are numbered 1.. in sorted order of
//     their names.
//
// Both shuffle the training rows (deterministically by --seed), keep at most
// --max-history newest behaviours per row (0 = all), and print a JSON summary line.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/hash.h"
#include "common/status.h"

DEFINE_uint64(seed, 1, "random seed (test users, negatives, shuffling)");
DEFINE_double(test_fraction, 0.2, "movielens: fraction of users in the test split");
DEFINE_uint32(max_history, 50, "newest behaviours kept per row; 0 = all");

namespace {

using din::Result;
using din::Status;

// ---- small helpers ------------------------------------------------------------------

struct Rng {
  uint64_t s;
  uint64_t Next() { return din::Mix64(s += 0x9e3779b97f4a7c15ULL); }
};

// Calls fn(line, line_number) for every line of `path` (a trailing '\r' removed).
template <typename Fn>
Status ForEachLine(const std::string& path, Fn fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open");
  std::string line;
  uint64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    DIN_RETURN_IF_ERROR(fn(std::string_view(line), number));
  }
  if (in.bad()) return Status::IoError(path + ": read failed");
  return Status::Ok();
}

std::vector<std::string_view> Split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    if (at == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, at - start));
    start = at + sep.size();
  }
}

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

Status Bad(const std::string& path, uint64_t line, const std::string& why) {
  return Status::InvalidArgument(path + ":" + std::to_string(line) + ": " + why);
}

// Buffered din-tsv writer.
class TsvWriter {
 public:
  explicit TsvWriter(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {
    if (!f_) LOG(FATAL) << "cannot create " << path << ": " << std::strerror(errno);
  }
  ~TsvWriter() {
    Flush();
    if (std::fclose(f_) != 0) LOG(FATAL) << "cannot write " << path_;
  }
  void Row(int label, uint64_t user, uint64_t item, uint64_t cate, const uint64_t* hist_items,
           const uint64_t* hist_cates, size_t n) {
    Num(label);
    buf_ += '\t';
    Num(user);
    buf_ += '\t';
    Num(item);
    buf_ += '\t';
    Num(cate);
    buf_ += '\t';
    for (size_t j = 0; j < n; ++j) {
      if (j) buf_ += ',';
      Num(hist_items[j]);
    }
    buf_ += '\t';
    for (size_t j = 0; j < n; ++j) {
      if (j) buf_ += ',';
      Num(hist_cates[j]);
    }
    buf_ += '\n';
    ++rows_;
    if (buf_.size() > (1 << 20)) Flush();
  }
  uint64_t rows() const { return rows_; }

 private:
  void Num(uint64_t v) {
    char tmp[24];
    buf_.append(tmp, std::to_chars(tmp, tmp + sizeof(tmp), v).ptr);
  }
  void Flush() {
    if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
      LOG(FATAL) << "cannot write " << path_ << ": " << std::strerror(errno);
    buf_.clear();
  }
  std::string path_;
  FILE* f_;
  std::string buf_;
  uint64_t rows_ = 0;
};

// One history window: the newest `max_history` of items[0..i).
size_t HistoryStart(size_t i) {
  return FLAGS_max_history == 0 || i <= FLAGS_max_history ? 0 : i - FLAGS_max_history;
}

// ---- MovieLens ----------------------------------------------------------------------

// Fixed genre IDs, so a genre keeps its ID across MovieLens releases.
const std::map<std::string, uint64_t>& Genres() {
  static const std::map<std::string, uint64_t> kGenres = {{"(no genres listed)", 1},
                                                          {"unknown", 1},
                                                          {"Action", 2},
                                                          {"Adventure", 3},
                                                          {"Animation", 4},
                                                          {"Children", 5},
                                                          {"Children's", 5},
                                                          {"Comedy", 6},
                                                          {"Crime", 7},
                                                          {"Documentary", 8},
                                                          {"Drama", 9},
                                                          {"Fantasy", 10},
                                                          {"Film-Noir", 11},
                                                          {"Horror", 12},
                                                          {"IMAX", 13},
                                                          {"Musical", 14},
                                                          {"Mystery", 15},
                                                          {"Romance", 16},
                                                          {"Sci-Fi", 17},
                                                          {"Thriller", 18},
                                                          {"War", 19},
                                                          {"Western", 20}};
  return kGenres;
}

uint64_t GenreId(std::string_view name) {
  auto it = Genres().find(std::string(name));
  if (it != Genres().end()) return it->second;
  return 1000 + din::HashToken(name) % 1000000000ULL;
}

// ml-100k genre flag order (u.genre).
const char* const k100kGenres[] = {
    "unknown",     "Action", "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama",  "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance",     "Sci-Fi", "Thriller",  "War",       "Western"};

struct Rating {
  uint64_t user, movie;
  double rating;
  int64_t time;
};

Status ReadMovieLens(const std::string& dir, std::vector<Rating>* ratings,
                     std::unordered_map<uint64_t, uint64_t>* movie_cate, std::string* variant) {
  namespace fs = std::filesystem;
  if (fs::exists(dir + "/ratings.csv")) {
    *variant = "ml-latest";
    const std::string rpath = dir + "/ratings.csv", mpath = dir + "/movies.csv";
    DIN_RETURN_IF_ERROR(ForEachLine(rpath, [&](std::string_view line, uint64_t n) -> Status {
      if (n == 1 || line.empty()) return Status::Ok();  // header
      auto f = Split(line, ",");
      Rating r;
      if (f.size() != 4 || !ParseNumber(f[0], &r.user) || !ParseNumber(f[1], &r.movie) ||
          !ParseNumber(f[2], &r.rating) || !ParseNumber(f[3], &r.time))
        return Bad(rpath, n, "expected userId,movieId,rating,timestamp");
      ratings->push_back(r);
      return Status::Ok();
    }));
    // movieId,title,genres: the title may be quoted and hold commas; genres never do.
    return ForEachLine(mpath, [&](std::string_view line, uint64_t n) -> Status {
      if (n == 1 || line.empty()) return Status::Ok();
      const size_t first = line.find(','), last = line.rfind(',');
      uint64_t movie;
      if (first == std::string_view::npos || first == last ||
          !ParseNumber(line.substr(0, first), &movie))
        return Bad(mpath, n, "expected movieId,title,genres");
      const std::string_view genres = line.substr(last + 1);
      (*movie_cate)[movie] = GenreId(genres.substr(0, genres.find('|')));
      return Status::Ok();
    });
  }
  if (fs::exists(dir + "/ratings.dat")) {
    *variant = "ml-1m";
    const std::string rpath = dir + "/ratings.dat", mpath = dir + "/movies.dat";
    DIN_RETURN_IF_ERROR(ForEachLine(rpath, [&](std::string_view line, uint64_t n) -> Status {
      if (line.empty()) return Status::Ok();
      auto f = Split(line, "::");
      Rating r;
      if (f.size() != 4 || !ParseNumber(f[0], &r.user) || !ParseNumber(f[1], &r.movie) ||
          !ParseNumber(f[2], &r.rating) || !ParseNumber(f[3], &r.time))
        return Bad(rpath, n, "expected UserID::MovieID::Rating::Timestamp");
      ratings->push_back(r);
      return Status::Ok();
    }));
    return ForEachLine(mpath, [&](std::string_view line, uint64_t n) -> Status {
      if (line.empty()) return Status::Ok();
      auto f = Split(line, "::");
      uint64_t movie;
      if (f.size() < 3 || !ParseNumber(f[0], &movie))
        return Bad(mpath, n, "expected MovieID::Title::Genres");
      (*movie_cate)[movie] = GenreId(f.back().substr(0, f.back().find('|')));
      return Status::Ok();
    });
  }
  if (fs::exists(dir + "/u.data")) {
    *variant = "ml-100k";
    const std::string rpath = dir + "/u.data", mpath = dir + "/u.item";
    DIN_RETURN_IF_ERROR(ForEachLine(rpath, [&](std::string_view line, uint64_t n) -> Status {
      if (line.empty()) return Status::Ok();
      auto f = Split(line, "\t");
      Rating r;
      if (f.size() != 4 || !ParseNumber(f[0], &r.user) || !ParseNumber(f[1], &r.movie) ||
          !ParseNumber(f[2], &r.rating) || !ParseNumber(f[3], &r.time))
        return Bad(rpath, n, "expected user<TAB>item<TAB>rating<TAB>timestamp");
      ratings->push_back(r);
      return Status::Ok();
    }));
    // id|title|release|video release|url|19 genre flags.
    return ForEachLine(mpath, [&](std::string_view line, uint64_t n) -> Status {
      if (line.empty()) return Status::Ok();
      auto f = Split(line, "|");
      uint64_t movie;
      if (f.size() != 24 || !ParseNumber(f[0], &movie))
        return Bad(mpath, n, "expected 24 '|'-separated fields (id|title|...|19 genre flags)");
      uint64_t cate = GenreId("unknown");
      for (int g = 0; g < 19; ++g)
        if (f[5 + g] == "1") {
          cate = GenreId(k100kGenres[g]);
          break;
        }
      (*movie_cate)[movie] = cate;
      return Status::Ok();
    });
  }
  return Status::NotFound(dir + ": no ratings.csv, ratings.dat or u.data");
}

Status ConvertMovieLens(const std::string& dir, const std::string& out) {
  std::vector<Rating> ratings;
  std::unordered_map<uint64_t, uint64_t> movie_cate;
  std::string variant;
  DIN_RETURN_IF_ERROR(ReadMovieLens(dir, &ratings, &movie_cate, &variant));
  if (ratings.empty()) return Status::InvalidArgument(dir + ": no ratings");
  std::stable_sort(ratings.begin(), ratings.end(), [](const Rating& a, const Rating& b) {
    if (a.user != b.user) return a.user < b.user;
    if (a.time != b.time) return a.time < b.time;
    return a.movie < b.movie;
  });
  std::vector<uint64_t> cate(ratings.size());
  for (size_t i = 0; i < ratings.size(); ++i) {
    auto it = movie_cate.find(ratings[i].movie);
    cate[i] = it == movie_cate.end() ? GenreId("unknown") : it->second;
  }
  // Users: [begin, end) ranges of `ratings`.
  std::vector<size_t> user_begin;
  for (size_t i = 0; i < ratings.size(); ++i)
    if (i == 0 || ratings[i].user != ratings[i - 1].user) user_begin.push_back(i);
  user_begin.push_back(ratings.size());
  const uint64_t seed_key = din::Mix64(FLAGS_seed ^ 0x7e57);

  std::vector<size_t> train_rows;  // indices into ratings
  std::vector<uint64_t> hist_items, hist_cates;
  uint64_t train_users = 0, test_users = 0, positives = 0;
  std::filesystem::create_directories(out);
  {
    TsvWriter test(out + "/test.tsv");
    for (size_t u = 0; u + 1 < user_begin.size(); ++u) {
      const size_t b = user_begin[u], e = user_begin[u + 1];
      const bool is_test = din::UniformAt(seed_key, ratings[b].user) < FLAGS_test_fraction;
      (is_test ? test_users : train_users)++;
      for (size_t i = b; i < e; ++i) {
        positives += ratings[i].rating >= 4 ? 1 : 0;
        if (!is_test) {
          train_rows.push_back(i);
          continue;
        }
        const size_t h = b + HistoryStart(i - b);
        hist_items.clear();
        hist_cates.clear();
        for (size_t j = h; j < i; ++j) {
          hist_items.push_back(ratings[j].movie);
          hist_cates.push_back(cate[j]);
        }
        test.Row(ratings[i].rating >= 4, ratings[i].user, ratings[i].movie, cate[i],
                 hist_items.data(), hist_cates.data(), hist_items.size());
      }
    }
  }
  Rng rng{seed_key};
  for (size_t i = train_rows.size(); i > 1; --i)
    std::swap(train_rows[i - 1], train_rows[rng.Next() % i]);
  {
    TsvWriter train(out + "/train.tsv");
    for (size_t i : train_rows) {
      const size_t b = *(std::upper_bound(user_begin.begin(), user_begin.end(), i) - 1);
      const size_t h = b + HistoryStart(i - b);
      hist_items.clear();
      hist_cates.clear();
      for (size_t j = h; j < i; ++j) {
        hist_items.push_back(ratings[j].movie);
        hist_cates.push_back(cate[j]);
      }
      train.Row(ratings[i].rating >= 4, ratings[i].user, ratings[i].movie, cate[i],
                hist_items.data(), hist_cates.data(), hist_items.size());
    }
  }
  std::printf(
      "{\"dataset\": \"%s\", \"ratings\": %zu, \"positives\": %llu, \"train_rows\": %zu, "
      "\"test_rows\": %zu, \"train_users\": %llu, \"test_users\": %llu}\n",
      variant.c_str(), ratings.size(), static_cast<unsigned long long>(positives),
      train_rows.size(), ratings.size() - train_rows.size(),
      static_cast<unsigned long long>(train_users), static_cast<unsigned long long>(test_users));
  return Status::Ok();
}

// ---- A tiny reader of JSON / Python literals ----------------------------------------

struct Value {
  enum Type { kNull, kBool, kNumber, kString, kList, kObject } type = kNull;
  std::string str;  // kString; for kNumber its text
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> members;

  const Value* Get(std::string_view key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
};

// Parses one JSON value or Python literal (single- or double-quoted strings, True/False/
// None, tuples as lists). Enough for the Amazon review and metadata files.
class LiteralParser {
 public:
  explicit LiteralParser(std::string_view text)
      : p_(text.data()), end_(text.data() + text.size()) {}

  bool ParseTop(Value* v, std::string* error) {
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
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
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
  bool ParseValue(Value* v, int depth) {
    if (depth > 64) return Fail("nesting too deep");
    SkipSpace();
    if (p_ == end_) return Fail("unexpected end of line");
    const char c = *p_;
    if (c == '"' || c == '\'') {
      v->type = Value::kString;
      return ParseString(&v->str);
    }
    if (c == '{') {
      v->type = Value::kObject;
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
        v->members.emplace_back(std::move(key), Value());
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
      v->type = Value::kList;
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
      v->type = Value::kBool;
      v->str = word;
      return true;
    }
    if (word == "null" || word == "None") return true;
    if (!word.empty() && (std::isdigit(static_cast<unsigned char>(word[0])) || word[0] == '-' ||
                          word[0] == '+' || word[0] == '.')) {
      v->type = Value::kNumber;
      v->str = word;
      return true;
    }
    return Fail("unexpected character");
  }

  const char* p_;
  const char* end_;
  std::string error_;
};

Result<Value> ParseObjectLine(std::string_view line, const std::string& path, uint64_t n) {
  Value v;
  std::string error;
  if (!LiteralParser(line).ParseTop(&v, &error)) return Bad(path, n, error);
  if (v.type != Value::kObject) return Bad(path, n, "expected an object");
  return v;
}

// ---- Amazon -------------------------------------------------------------------------

Status ConvertAmazon(const std::string& reviews_path, const std::string& meta_path,
                     const std::string& out) {
  struct Review {
    std::string user, item;
    int64_t time;
    uint64_t order;
  };
  std::vector<Review> reviews;
  DIN_RETURN_IF_ERROR(ForEachLine(reviews_path, [&](std::string_view line, uint64_t n) -> Status {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return Status::Ok();
    DIN_ASSIGN_OR_RETURN(Value v, ParseObjectLine(line, reviews_path, n));
    const Value* user = v.Get("reviewerID");
    const Value* item = v.Get("asin");
    const Value* time = v.Get("unixReviewTime");
    Review r;
    if (!user || user->type != Value::kString || !item || item->type != Value::kString)
      return Bad(reviews_path, n, "missing reviewerID or asin string");
    if (!time || !ParseNumber(std::string_view(time->str), &r.time))
      return Bad(reviews_path, n, "missing or non-integer unixReviewTime");
    r.user = user->str;
    r.item = item->str;
    r.order = reviews.size();
    reviews.push_back(std::move(r));
    return Status::Ok();
  }));
  if (reviews.empty()) return Status::InvalidArgument(reviews_path + ": no reviews");

  std::unordered_map<std::string, std::string> item_category;
  DIN_RETURN_IF_ERROR(ForEachLine(meta_path, [&](std::string_view line, uint64_t n) -> Status {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return Status::Ok();
    DIN_ASSIGN_OR_RETURN(Value v, ParseObjectLine(line, meta_path, n));
    const Value* asin = v.Get("asin");
    if (!asin || asin->type != Value::kString) return Bad(meta_path, n, "missing asin string");
    std::string category;
    if (const Value* cats = v.Get("categories"); cats && cats->type == Value::kList) {
      // List of category paths: the last entry of the last path.
      if (!cats->items.empty()) {
        const Value& path = cats->items.back();
        if (path.type == Value::kList && !path.items.empty() &&
            path.items.back().type == Value::kString)
          category = path.items.back().str;
        else if (path.type == Value::kString)
          category = path.str;
      }
    } else if (const Value* cat = v.Get("category"); cat && cat->type == Value::kList) {
      if (!cat->items.empty() && cat->items.back().type == Value::kString)
        category = cat->items.back().str;
    }
    item_category[asin->str] = category;
    return Status::Ok();
  }));

  // Dense IDs in sorted name order, from 1.
  auto number = [](std::vector<std::string> names) {
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    std::unordered_map<std::string, uint64_t> ids;
    for (size_t i = 0; i < names.size(); ++i) ids[names[i]] = i + 1;
    return ids;
  };
  std::vector<std::string> names;
  for (const auto& r : reviews) names.push_back(r.user);
  const auto user_id = number(names);
  names.clear();
  for (const auto& r : reviews) names.push_back(r.item);
  const auto item_id = number(names);
  names.clear();
  uint64_t missing_meta = 0;
  for (const auto& [item, _] : item_id) {
    auto it = item_category.find(item);
    if (it == item_category.end()) ++missing_meta;
    names.push_back(it == item_category.end() ? std::string() : it->second);
  }
  const auto cate_id = number(names);
  std::vector<uint64_t> cate_of(item_id.size() + 1);
  for (const auto& [item, id] : item_id) {
    auto it = item_category.find(item);
    cate_of[id] = cate_id.at(it == item_category.end() ? std::string() : it->second);
  }
  if (missing_meta > 0)
    LOG(WARNING) << missing_meta << " reviewed items have no metadata; their category is \"\"";

  std::stable_sort(reviews.begin(), reviews.end(), [](const Review& a, const Review& b) {
    if (a.user != b.user) return a.user < b.user;
    if (a.time != b.time) return a.time < b.time;
    return a.order < b.order;
  });

  struct Sample {
    uint64_t user;
    uint32_t begin, pos;  // the user's reviews [begin, pos) are the history
    uint64_t item;
    int label;
  };
  const uint64_t item_count = item_id.size();
  std::vector<uint64_t> seq(reviews.size());  // item IDs in user/time order
  for (size_t i = 0; i < reviews.size(); ++i) seq[i] = item_id.at(reviews[i].item);
  Rng rng{din::Mix64(FLAGS_seed ^ 0xa3a2)};
  std::vector<Sample> train, test;
  std::unordered_set<uint64_t> reviewed;
  for (size_t b = 0; b < reviews.size();) {
    size_t e = b;
    while (e < reviews.size() && reviews[e].user == reviews[b].user) ++e;
    const uint64_t user = user_id.at(reviews[b].user);
    reviewed.clear();
    reviewed.insert(seq.begin() + b, seq.begin() + e);
    for (size_t i = b + 1; i < e; ++i) {
      uint64_t neg = 0;
      if (reviewed.size() < item_count) {
        do neg = 1 + rng.Next() % item_count;
        while (reviewed.count(neg));
      }
      auto& split = i + 1 == e ? test : train;
      split.push_back({user, static_cast<uint32_t>(b), static_cast<uint32_t>(i), seq[i], 1});
      if (neg) split.push_back({user, static_cast<uint32_t>(b), static_cast<uint32_t>(i), neg, 0});
    }
    b = e;
  }
  for (size_t i = train.size(); i > 1; --i) std::swap(train[i - 1], train[rng.Next() % i]);

  std::filesystem::create_directories(out);
  std::vector<uint64_t> hist_items, hist_cates;
  auto write = [&](const std::vector<Sample>& rows, const std::string& path) {
    TsvWriter w(path);
    for (const Sample& s : rows) {
      const size_t h = s.begin + HistoryStart(s.pos - s.begin);
      hist_items.assign(seq.begin() + h, seq.begin() + s.pos);
      hist_cates.clear();
      for (uint64_t item : hist_items) hist_cates.push_back(cate_of[item]);
      w.Row(s.label, s.user, s.item, cate_of[s.item], hist_items.data(), hist_cates.data(),
            hist_items.size());
    }
  };
  write(train, out + "/train.tsv");
  write(test, out + "/test.tsv");
  std::printf(
      "{\"dataset\": \"amazon\", \"reviews\": %zu, \"users\": %zu, \"items\": %zu, "
      "\"categories\": %zu, \"train_rows\": %zu, \"test_rows\": %zu, \"items_without_meta\": "
      "%llu}\n",
      reviews.size(), user_id.size(), item_id.size(), cate_id.size(), train.size(), test.size(),
      static_cast<unsigned long long>(missing_meta));
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "din_convert movielens DIR OUT | din_convert amazon REVIEWS META OUT  [--seed N] "
      "[--test-fraction F] [--max-history N]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  const std::vector<std::string> args(argv + 1, argv + argc);
  Status st;
  if (args.size() == 3 && args[0] == "movielens") {
    if (!(FLAGS_test_fraction >= 0 && FLAGS_test_fraction <= 1))
      LOG(FATAL) << "--test-fraction must be in [0, 1]";
    st = ConvertMovieLens(args[1], args[2]);
  } else if (args.size() == 4 && args[0] == "amazon") {
    st = ConvertAmazon(args[1], args[2], args[3]);
  } else {
    std::fprintf(stderr, "usage: %s\n", gflags::ProgramUsage());
    return 2;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "din_convert: %s\n", st.message().c_str());
    return 1;
  }
  return 0;
}
