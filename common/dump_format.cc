#include "common/dump_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace din {

// ---- XXH64 -------------------------------------------------------------------------

namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ULL;

static_assert(std::endian::native == std::endian::little, "dump files are little-endian");

inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t Read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t Round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t MergeRound(uint64_t acc, uint64_t val) {
  acc ^= Round(0, val);
  return acc * kP1 + kP4;
}

}  // namespace

Xxh64::Xxh64() : v_{kP1 + kP2, kP2, 0, 0 - kP1} {}

void Xxh64::Update(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (buffered_ + n < 32) {
    std::memcpy(buf_ + buffered_, p, n);
    buffered_ += n;
    return;
  }
  if (buffered_ > 0) {
    const size_t take = 32 - buffered_;
    std::memcpy(buf_ + buffered_, p, take);
    for (int i = 0; i < 4; ++i) v_[i] = Round(v_[i], Read64(buf_ + 8 * i));
    p += take;
    n -= take;
    buffered_ = 0;
  }
  uint64_t v0 = v_[0], v1 = v_[1], v2 = v_[2], v3 = v_[3];
  for (; n >= 32; p += 32, n -= 32) {
    v0 = Round(v0, Read64(p));
    v1 = Round(v1, Read64(p + 8));
    v2 = Round(v2, Read64(p + 16));
    v3 = Round(v3, Read64(p + 24));
  }
  v_[0] = v0, v_[1] = v1, v_[2] = v2, v_[3] = v3;
  std::memcpy(buf_, p, n);
  buffered_ = n;
}

uint64_t Xxh64::Digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = std::rotl(v_[0], 1) + std::rotl(v_[1], 7) + std::rotl(v_[2], 12) + std::rotl(v_[3], 18);
    for (int i = 0; i < 4; ++i) h = MergeRound(h, v_[i]);
  } else {
    h = kP5;  // seed 0
  }
  h += total_;
  const unsigned char* p = buf_;
  size_t n = buffered_;
  for (; n >= 8; p += 8, n -= 8) {
    h ^= Round(0, Read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  if (n >= 4) {
    h ^= static_cast<uint64_t>(Read32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
    n -= 4;
  }
  for (; n > 0; ++p, --n) {
    h ^= (*p) * kP5;
    h = std::rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

// ---- names -------------------------------------------------------------------------

std::string DumpPartStem(uint32_t shard, uint32_t shards) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "part-%05u-of-%05u", shard, shards);
  return buf;
}

Status CheckDumpTableName(const std::string& name) {
  if (name.empty() || name == "." || name == "..")
    return Status::InvalidArgument("table name '" + name + "' cannot name a dump directory");
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '/' || u <= ' ' || u == 0x7f)
      return Status::InvalidArgument("table name '" + name +
                                     "' cannot name a dump directory (has '/', a space or a "
                                     "control character)");
  }
  return Status::Ok();
}

// ---- NPY ---------------------------------------------------------------------------

size_t NpyInfo::item_bytes() const {
  if (descr.size() < 3) return 0;
  size_t n = 0;
  std::from_chars(descr.data() + 2, descr.data() + descr.size(), n);
  return n;
}

uint64_t NpyInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

std::string NpyHeader(const std::string& descr, const std::vector<uint64_t>& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]);
    dict += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
    if (i + 1 < shape.size()) dict += " ";
  }
  dict += "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary; '\n' ends the header.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  const auto len = static_cast<uint16_t>(dict.size());
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>(len >> 8);
  return out + dict;
}

namespace {

// The value after 'key': in the header dict, or npos.
size_t ValueOf(const std::string& dict, const std::string& key) {
  const size_t k = dict.find("'" + key + "'");
  if (k == std::string::npos) return k;
  size_t p = dict.find(':', k);
  if (p == std::string::npos) return p;
  ++p;
  while (p < dict.size() && dict[p] == ' ') ++p;
  return p;
}

}  // namespace

Result<NpyInfo> ParseNpyHeader(const std::string& data, const std::string& origin) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(origin + ": not a readable .npy file: " + why);
  };
  if (data.size() < 10 || data.compare(0, 6, "\x93NUMPY") != 0) return bad("no NPY magic");
  const auto major = static_cast<unsigned char>(data[6]);
  size_t len = 0, start = 0;
  if (major == 1) {
    len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (data.size() < 12) return bad("truncated header");
    uint32_t l;
    std::memcpy(&l, data.data() + 8, 4);
    len = l;
    start = 12;
  } else {
    return bad("unsupported format version " + std::to_string(major));
  }
  if (data.size() < start + len) return bad("truncated header");
  const std::string dict = data.substr(start, len);
  NpyInfo info;
  info.header_bytes = start + len;
  size_t p = ValueOf(dict, "descr");
  if (p == std::string::npos || dict[p] != '\'') return bad("no descr");
  const size_t q = dict.find('\'', p + 1);
  if (q == std::string::npos) return bad("bad descr");
  info.descr = dict.substr(p + 1, q - p - 1);
  if (info.descr.size() < 3 || (info.descr[0] != '<' && info.descr[0] != '|') ||
      info.item_bytes() == 0)
    return bad("unsupported dtype '" + info.descr + "' (little-endian scalars only)");
  p = ValueOf(dict, "fortran_order");
  if (p == std::string::npos || dict.compare(p, 5, "False") != 0)
    return bad("Fortran-order arrays are not supported");
  p = ValueOf(dict, "shape");
  if (p == std::string::npos || dict[p] != '(') return bad("no shape");
  const size_t end = dict.find(')', p);
  if (end == std::string::npos) return bad("bad shape");
  for (size_t i = p + 1; i < end;) {
    while (i < end && (dict[i] == ' ' || dict[i] == ',')) ++i;
    if (i == end) break;
    uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(dict.data() + i, dict.data() + end, v);
    if (ec != std::errc()) return bad("bad shape");
    info.shape.push_back(v);
    i = static_cast<size_t>(ptr - dict.data());
  }
  return info;
}

Result<NpyInfo> ReadNpyHeader(std::FILE* f, const std::string& origin) {
  std::string head(12, '\0');
  const size_t got = std::fread(head.data(), 1, head.size(), f);
  head.resize(got);
  if (got < 10 || head.compare(0, 6, "\x93NUMPY") != 0)
    return Status::InvalidArgument(origin + ": not a readable .npy file: no NPY magic");
  size_t start = 10, len = 0;
  if (head[6] == 1) {
    len = static_cast<unsigned char>(head[8]) | (static_cast<unsigned char>(head[9]) << 8);
  } else {
    if (got < 12) return Status::InvalidArgument(origin + ": truncated .npy header");
    uint32_t l;
    std::memcpy(&l, head.data() + 8, 4);
    len = l;
    start = 12;
  }
  if (len > (1u << 24)) return Status::InvalidArgument(origin + ": absurd .npy header length");
  std::string all(start + len, '\0');
  if (std::fseek(f, 0, SEEK_SET) != 0 || std::fread(all.data(), 1, all.size(), f) != all.size())
    return Status::InvalidArgument(origin + ": truncated .npy header");
  return ParseNpyHeader(all, origin);
}

// ---- MANIFEST ----------------------------------------------------------------------

const ManifestTable* Manifest::Find(const std::string& table) const {
  for (const auto& t : tables)
    if (t.name == table) return &t;
  return nullptr;
}

std::string FormatManifest(const Manifest& m) {
  std::ostringstream out;
  out << "din-dump 1\n";
  out << "step " << m.step << "\n";
  if (!m.base.empty()) out << "base " << m.base << "\n";
  if (!m.parent.empty()) out << "parent " << m.parent << "\n";
  for (const auto& t : m.tables) {
    out << "table " << t.name << " dim " << t.dim << " shards " << t.shards << " rows " << t.rows
        << " format " << (t.text ? "text" : "npy") << " counts " << (t.counts ? 1 : 0);
    if (t.checkpoint()) out << " state " << t.state_floats << " optimizer " << t.optimizer;
    out << "\n";
  }
  for (const auto& t : m.tables) {
    for (const auto& p : t.parts) {
      out << "part " << t.name << " " << p.shard << " rows " << p.rows << "\n";
      for (const auto& f : p.files) {
        char hex[17];
        std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(f.xxh64));
        out << "file " << f.name << " " << f.bytes << " " << hex << "\n";
      }
    }
  }
  out << "config\n" << m.config_text;
  return out.str();
}

Result<Manifest> ParseManifest(const std::string& text, const std::string& origin) {
  Manifest m;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(origin + ":" + std::to_string(lineno) + ": " + why);
  };
  ManifestPart* part = nullptr;
  bool header = false;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (!header) {
      int version = 0;
      if (kind != "din-dump" || !(ls >> version) || version != 1)
        return bad("not a din dump manifest (expected 'din-dump 1')");
      header = true;
      continue;
    }
    if (kind == "step") {
      if (!(ls >> m.step)) return bad("bad step");
    } else if (kind == "base") {
      if (!(ls >> m.base)) return bad("bad base");
    } else if (kind == "parent") {
      if (!(ls >> m.parent)) return bad("bad parent");
    } else if (kind == "table") {
      if (part != nullptr) return bad("table line after the parts");
      ManifestTable t;
      std::string k_dim, k_shards, k_rows, k_format, format, k_counts;
      int counts = 0;
      if (!(ls >> t.name >> k_dim >> t.dim >> k_shards >> t.shards >> k_rows >> t.rows >>
            k_format >> format >> k_counts >> counts) ||
          k_dim != "dim" || k_shards != "shards" || k_rows != "rows" || k_format != "format" ||
          k_counts != "counts" || (format != "npy" && format != "text") || t.shards == 0)
        return bad("bad table line");
      t.text = format == "text";
      t.counts = counts != 0;
      std::string k_state, k_optimizer;
      if (ls >> k_state) {
        if (k_state != "state" || !(ls >> t.state_floats >> k_optimizer >> t.optimizer) ||
            k_optimizer != "optimizer" || t.text)
          return bad("bad table line");
      }
      m.tables.push_back(std::move(t));
    } else if (kind == "part") {
      std::string name, k_rows;
      ManifestPart p;
      if (!(ls >> name >> p.shard >> k_rows >> p.rows) || k_rows != "rows")
        return bad("bad part line");
      ManifestTable* t = nullptr;
      for (auto& tt : m.tables)
        if (tt.name == name) t = &tt;
      if (t == nullptr) return bad("part of unknown table " + name);
      if (p.shard != t->parts.size() || p.shard >= t->shards)
        return bad("parts of table " + name + " out of order");
      t->parts.push_back(std::move(p));
      part = &t->parts.back();
    } else if (kind == "file") {
      ManifestFile f;
      std::string hex;
      if (part == nullptr || !(ls >> f.name >> f.bytes >> hex) || hex.size() != 16)
        return bad("bad file line");
      auto [ptr, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), f.xxh64, 16);
      if (ec != std::errc() || ptr != hex.data() + hex.size()) return bad("bad checksum");
      part->files.push_back(std::move(f));
    } else if (kind == "config") {
      std::ostringstream rest;
      rest << in.rdbuf();
      m.config_text = rest.str();
      break;
    } else if (!kind.empty()) {
      return bad("unknown record '" + kind + "'");
    }
  }
  if (!header) return Status::InvalidArgument(origin + ": empty manifest");
  for (const auto& t : m.tables) {
    if (t.parts.size() != t.shards)
      return Status::InvalidArgument(origin + ": table " + t.name + " lists " +
                                     std::to_string(t.parts.size()) + " parts of " +
                                     std::to_string(t.shards));
  }
  return m;
}

Result<std::string> ReadVerifiedFile(const std::string& dir, const ManifestFile& file) {
  const std::string path = dir + "/" + file.name;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::IoError("cannot read " + path);
  if (data.size() != file.bytes)
    return Status::InvalidArgument(path + ": " + std::to_string(data.size()) +
                                   " bytes, the MANIFEST says " + std::to_string(file.bytes));
  if (Xxh64::Of(data.data(), data.size()) != file.xxh64)
    return Status::InvalidArgument(path + ": checksum mismatch (XXH64 differs from the MANIFEST)");
  return data;
}

Status VerifyManifestFile(const std::string& dir, const ManifestFile& file) {
  const std::string path = dir + "/" + file.name;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  Xxh64 h;
  uint64_t total = 0;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    h.Update(buf.data(), n);
    total += n;
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::IoError("cannot read " + path);
  if (total != file.bytes)
    return Status::InvalidArgument(path + ": " + std::to_string(total) +
                                   " bytes, the MANIFEST says " + std::to_string(file.bytes));
  if (h.Digest() != file.xxh64)
    return Status::InvalidArgument(path + ": checksum mismatch (XXH64 differs from the MANIFEST)");
  return Status::Ok();
}

Result<Manifest> ReadCompleteManifest(const std::string& dir) {
  const std::string success = dir + "/" + kSuccessName;
  if (!std::filesystem::exists(success))
    return Status::InvalidArgument(success + " is missing: not a complete dump");
  const std::string path = dir + "/" + kManifestName;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Status::IoError("cannot open " + path + ": " + std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  std::fclose(f);
  return ParseManifest(text, path);
}

// ---- durable files -----------------------------------------------------------------

Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::IoError("cannot open directory " + dir + ": " + std::strerror(errno));
  Status st;
  if (::fsync(fd) != 0)
    st = Status::IoError("cannot fsync directory " + dir + ": " + std::strerror(errno));
  ::close(fd);
  return st;
}

Status WriteFileDurably(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError("cannot create " + tmp + ": " + std::strerror(errno));
  const char* p = contents.data();
  size_t n = contents.size();
  Status st;
  while (n > 0 && st.ok()) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) st = Status::IoError("cannot write " + tmp + ": " + std::strerror(errno));
    if (w > 0) p += w, n -= static_cast<size_t>(w);
  }
  if (st.ok() && ::fsync(fd) != 0)
    st = Status::IoError("cannot fsync " + tmp + ": " + std::strerror(errno));
  ::close(fd);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0)
    st = Status::IoError("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
  if (!st.ok()) return st;
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDirectory(dir.empty() ? "." : dir);
}

}  // namespace din
