// din_convert: real datasets -> din-tsv (docs/design.md §7), OUT/train.tsv and OUT/test.tsv.
//
//   din_convert movielens DIR OUT [--seed 1] [--test-fraction 0.2] [--max-history 50]
//     DIR holds one release of kMovieLensFormats below: ml-latest(-small) (ratings.csv,
//     movies.csv), ml-1m (ratings.dat, movies.dat) or ml-100k (u.data, u.item). The
//     paper's protocol: label = rating >= 4; one row per rating; behaviours = the user's
//     movies rated before it, in time order (ties by movie ID); category = the movie's
//     first genre, a fixed ID per genre name (kGenres below; other names hash to
//     1000 + HashToken(name) % 10^9); users go to the test split with probability
//     --test-fraction, decided by (seed, user) alone.
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
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/hash.h"
#include "common/json.h"
#include "common/rng.h"
#include "common/status.h"
#include "common/tsv_writer.h"
#include "tools/literal_parser.h"

DEFINE_uint64(seed, 1, "random seed (test users, negatives, shuffling)");
DEFINE_double(test_fraction, 0.2, "movielens: fraction of users in the test split");
DEFINE_uint32(max_history, 50, "newest behaviours kept per row; 0 = all");

namespace {

using din::Json;
using din::JsonLine;
using din::LiteralValue;
using din::ParseLiteral;
using din::Result;
using din::SplitMix64;
using din::Status;
using din::TsvWriter;

// ---- small helpers ------------------------------------------------------------------

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

// Category of an ml-latest movies.csv line (movieId,title,genres): the title may be
// quoted and hold commas; genres never do.
bool ParseLatestMovie(std::string_view line, uint64_t* movie, uint64_t* cate) {
  const size_t first = line.find(','), last = line.rfind(',');
  if (first == std::string_view::npos || first == last ||
      !ParseNumber(line.substr(0, first), movie))
    return false;
  const std::string_view genres = line.substr(last + 1);
  *cate = GenreId(genres.substr(0, genres.find('|')));
  return true;
}

// ml-1m movies.dat: MovieID::Title::Genres.
bool Parse1mMovie(std::string_view line, uint64_t* movie, uint64_t* cate) {
  const auto f = Split(line, "::");
  if (f.size() < 3 || !ParseNumber(f[0], movie)) return false;
  *cate = GenreId(f.back().substr(0, f.back().find('|')));
  return true;
}

// ml-100k u.item: id|title|release|video release|url|19 genre flags; the first genre
// flagged 1.
bool Parse100kMovie(std::string_view line, uint64_t* movie, uint64_t* cate) {
  const auto f = Split(line, "|");
  if (f.size() != 24 || !ParseNumber(f[0], movie)) return false;
  *cate = GenreId("unknown");
  for (int g = 0; g < 19; ++g)
    if (f[5 + g] == "1") {
      *cate = GenreId(k100kGenres[g]);
      break;
    }
  return true;
}

// One MovieLens release: its ratings file (user, movie, rating, timestamp split by
// `separator`) and its movies file (read by `parse_movie`). A directory is read as the
// first release whose ratings file it holds.
struct MovieLensFormat {
  const char* name;  // "dataset" in the summary line
  const char* ratings_file;
  const char* ratings_columns;  // for help and errors ("expected ...")
  const char* separator;
  const char* movies_file;
  const char* movies_columns;
  bool (*parse_movie)(std::string_view line, uint64_t* movie, uint64_t* cate);
  bool header;  // both files start with a header line
};

const MovieLensFormat kMovieLensFormats[] = {
    {"ml-latest", "ratings.csv", "userId,movieId,rating,timestamp", ",", "movies.csv",
     "movieId,title,genres", ParseLatestMovie, true},
    {"ml-1m", "ratings.dat", "UserID::MovieID::Rating::Timestamp", "::", "movies.dat",
     "MovieID::Title::Genres", Parse1mMovie, false},
    {"ml-100k", "u.data", "user<TAB>item<TAB>rating<TAB>timestamp", "\t", "u.item",
     "24 '|'-separated fields (id|title|...|19 genre flags)", Parse100kMovie, false},
};

Status ReadMovieLens(const std::string& dir, const MovieLensFormat& format,
                     std::vector<Rating>* ratings,
                     std::unordered_map<uint64_t, uint64_t>* movie_cate) {
  const std::string rpath = dir + "/" + format.ratings_file;
  const std::string mpath = dir + "/" + format.movies_file;
  DIN_RETURN_IF_ERROR(ForEachLine(rpath, [&](std::string_view line, uint64_t n) -> Status {
    if ((format.header && n == 1) || line.empty()) return Status::Ok();
    const auto f = Split(line, format.separator);
    Rating r;
    if (f.size() != 4 || !ParseNumber(f[0], &r.user) || !ParseNumber(f[1], &r.movie) ||
        !ParseNumber(f[2], &r.rating) || !ParseNumber(f[3], &r.time))
      return Bad(rpath, n, std::string("expected ") + format.ratings_columns);
    ratings->push_back(r);
    return Status::Ok();
  }));
  return ForEachLine(mpath, [&](std::string_view line, uint64_t n) -> Status {
    if ((format.header && n == 1) || line.empty()) return Status::Ok();
    uint64_t movie, cate;
    if (!format.parse_movie(line, &movie, &cate))
      return Bad(mpath, n, std::string("expected ") + format.movies_columns);
    (*movie_cate)[movie] = cate;
    return Status::Ok();
  });
}

// The release in `dir`, or NotFound naming the ratings files looked for.
Result<const MovieLensFormat*> DetectMovieLens(const std::string& dir) {
  std::string names;
  const size_t count = std::size(kMovieLensFormats);
  for (size_t i = 0; i < count; ++i) {
    const MovieLensFormat& format = kMovieLensFormats[i];
    if (std::filesystem::exists(dir + "/" + format.ratings_file)) return &format;
    names += i == 0 ? "" : i + 1 == count ? " or " : ", ";
    names += format.ratings_file;
  }
  return Status::NotFound(dir + ": no " + names);
}

Status CreateOutputDir(const std::string& out) {
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return Status::IoError("cannot create " + out + ": " + ec.message());
  return Status::Ok();
}

Status ConvertMovieLens(const std::vector<std::string>& args) {
  const std::string &dir = args[0], &out = args[1];
  if (!(FLAGS_test_fraction >= 0 && FLAGS_test_fraction <= 1))
    return Status::InvalidArgument("--test-fraction must be in [0, 1]");
  DIN_ASSIGN_OR_RETURN(const MovieLensFormat* format, DetectMovieLens(dir));
  std::vector<Rating> ratings;
  std::unordered_map<uint64_t, uint64_t> movie_cate;
  DIN_RETURN_IF_ERROR(ReadMovieLens(dir, *format, &ratings, &movie_cate));
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

  // Rating i of the user whose ratings start at b, with the ratings before it.
  std::vector<uint64_t> hist_items, hist_cates;
  auto write_row = [&](TsvWriter& w, size_t b, size_t i) {
    hist_items.clear();
    hist_cates.clear();
    for (size_t j = b + HistoryStart(i - b); j < i; ++j) {
      hist_items.push_back(ratings[j].movie);
      hist_cates.push_back(cate[j]);
    }
    w.DinTsvRow(ratings[i].rating >= 4, ratings[i].user, ratings[i].movie, cate[i], hist_items,
                hist_cates);
  };
  std::vector<size_t> train_rows;  // indices into ratings
  uint64_t train_users = 0, test_users = 0, positives = 0;
  DIN_RETURN_IF_ERROR(CreateOutputDir(out));
  TsvWriter test;
  DIN_RETURN_IF_ERROR(test.Open(out + "/test.tsv"));
  for (size_t u = 0; u + 1 < user_begin.size(); ++u) {
    const size_t b = user_begin[u], e = user_begin[u + 1];
    const bool is_test = din::UniformAt(seed_key, ratings[b].user) < FLAGS_test_fraction;
    (is_test ? test_users : train_users)++;
    for (size_t i = b; i < e; ++i) {
      positives += ratings[i].rating >= 4 ? 1 : 0;
      if (is_test)
        write_row(test, b, i);
      else
        train_rows.push_back(i);
    }
  }
  DIN_RETURN_IF_ERROR(test.Close());
  SplitMix64 rng(seed_key);
  din::Shuffle(train_rows.begin(), train_rows.end(), rng);
  TsvWriter train;
  DIN_RETURN_IF_ERROR(train.Open(out + "/train.tsv"));
  for (size_t i : train_rows)
    write_row(train, *(std::upper_bound(user_begin.begin(), user_begin.end(), i) - 1), i);
  DIN_RETURN_IF_ERROR(train.Close());
  Json j;
  j["dataset"] = format->name;
  j["ratings"] = ratings.size();
  j["positives"] = positives;
  j["train_rows"] = train_rows.size();
  j["test_rows"] = ratings.size() - train_rows.size();
  j["train_users"] = train_users;
  j["test_users"] = test_users;
  std::printf("%s\n", JsonLine(j).c_str());
  return Status::Ok();
}

// One line of an Amazon file: an object (JSON or Python literal).
Result<LiteralValue> ParseObjectLine(std::string_view line, const std::string& path, uint64_t n) {
  Result<LiteralValue> v = ParseLiteral(line);
  if (!v.ok()) return Bad(path, n, v.status().message());
  if (v->type != LiteralValue::kObject) return Bad(path, n, "expected an object");
  return v;
}

// ---- Amazon -------------------------------------------------------------------------

Status ConvertAmazon(const std::vector<std::string>& args) {
  const std::string &reviews_path = args[0], &meta_path = args[1], &out = args[2];
  struct Review {
    std::string user, item;
    int64_t time;
    uint64_t order;
  };
  std::vector<Review> reviews;
  DIN_RETURN_IF_ERROR(ForEachLine(reviews_path, [&](std::string_view line, uint64_t n) -> Status {
    if (line.find_first_not_of(" \t") == std::string_view::npos) return Status::Ok();
    DIN_ASSIGN_OR_RETURN(LiteralValue v, ParseObjectLine(line, reviews_path, n));
    const LiteralValue* user = v.Get("reviewerID");
    const LiteralValue* item = v.Get("asin");
    const LiteralValue* time = v.Get("unixReviewTime");
    Review r;
    if (!user || user->type != LiteralValue::kString || !item ||
        item->type != LiteralValue::kString)
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
    DIN_ASSIGN_OR_RETURN(LiteralValue v, ParseObjectLine(line, meta_path, n));
    const LiteralValue* asin = v.Get("asin");
    if (!asin || asin->type != LiteralValue::kString)
      return Bad(meta_path, n, "missing asin string");
    std::string category;
    if (const LiteralValue* cats = v.Get("categories"); cats && cats->type == LiteralValue::kList) {
      // List of category paths: the last entry of the last path.
      if (!cats->items.empty()) {
        const LiteralValue& path = cats->items.back();
        if (path.type == LiteralValue::kList && !path.items.empty() &&
            path.items.back().type == LiteralValue::kString)
          category = path.items.back().str;
        else if (path.type == LiteralValue::kString)
          category = path.str;
      }
    } else if (const LiteralValue* cat = v.Get("category");
               cat && cat->type == LiteralValue::kList) {
      if (!cat->items.empty() && cat->items.back().type == LiteralValue::kString)
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
  SplitMix64 rng(din::Mix64(FLAGS_seed ^ 0xa3a2));
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
  din::Shuffle(train.begin(), train.end(), rng);

  DIN_RETURN_IF_ERROR(CreateOutputDir(out));
  std::vector<uint64_t> hist_items, hist_cates;
  auto write = [&](const std::vector<Sample>& rows, const std::string& path) -> Status {
    TsvWriter w;
    DIN_RETURN_IF_ERROR(w.Open(path));
    for (const Sample& s : rows) {
      const size_t h = s.begin + HistoryStart(s.pos - s.begin);
      hist_items.assign(seq.begin() + h, seq.begin() + s.pos);
      hist_cates.clear();
      for (uint64_t item : hist_items) hist_cates.push_back(cate_of[item]);
      w.DinTsvRow(s.label, s.user, s.item, cate_of[s.item], hist_items, hist_cates);
    }
    return w.Close();
  };
  DIN_RETURN_IF_ERROR(write(train, out + "/train.tsv"));
  DIN_RETURN_IF_ERROR(write(test, out + "/test.tsv"));
  Json j;
  j["dataset"] = "amazon";
  j["reviews"] = reviews.size();
  j["users"] = user_id.size();
  j["items"] = item_id.size();
  j["categories"] = cate_id.size();
  j["train_rows"] = train.size();
  j["test_rows"] = test.size();
  j["items_without_meta"] = missing_meta;
  std::printf("%s\n", JsonLine(j).c_str());
  return Status::Ok();
}

// ---- Commands ----------------------------------------------------------------------

struct Command {
  const char* name;
  const char* operands;  // space-separated names, for help and the operand count
  Status (*run)(const std::vector<std::string>& operands);
  std::string (*help)();  // what the command reads (indented lines)
};

std::string MovieLensHelp() {
  std::string help =
      "    MovieLens ratings, label = rating >= 4, users split by --test-fraction; DIR holds "
      "one of:\n";
  for (const MovieLensFormat& f : kMovieLensFormats) {
    char name[16];
    std::snprintf(name, sizeof(name), "%-10s", f.name);
    help += std::string("      ") + name + f.ratings_file + " (" + f.ratings_columns + "), " +
            f.movies_file + " (" + f.movies_columns + ")" +
            (f.header ? "; both with a header line" : "") + "\n";
  }
  return help;
}

std::string AmazonHelp() {
  return "    Amazon 5-core reviews, a positive and a sampled negative per review after the "
         "first;\n"
         "    one JSON or Python-literal object per line: REVIEWS (reviewerID, asin, "
         "unixReviewTime),\n"
         "    META (asin, categories: list of lists, or category: list)\n";
}

const Command kCommands[] = {
    {"movielens", "DIR OUT", ConvertMovieLens, MovieLensHelp},
    {"amazon", "REVIEWS META OUT", ConvertAmazon, AmazonHelp},
};

size_t OperandCount(const Command& c) {
  return static_cast<size_t>(std::count(c.operands, c.operands + std::strlen(c.operands), ' ')) + 1;
}

std::string Usage() {
  std::string usage;
  for (const Command& c : kCommands)
    usage += std::string(usage.empty() ? "" : " | ") + "din_convert " + c.name + " " + c.operands;
  usage += "  [--seed N] [--test-fraction F] [--max-history N]\n";
  for (const Command& c : kCommands)
    usage += std::string("  ") + c.name + " " + c.operands + ":\n" + c.help();
  return usage;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage(Usage());
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const Command& c : kCommands) {
    if (args.empty() || args[0] != c.name || args.size() != 1 + OperandCount(c)) continue;
    const Status st = c.run({args.begin() + 1, args.end()});
    if (!st.ok()) {
      std::fprintf(stderr, "din_convert: %s\n", st.message().c_str());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr, "usage: %s", gflags::ProgramUsage());
  return 2;
}
