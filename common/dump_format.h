// The on-disk layout of an embedding dump (docs/design.md §12), shared by the servers that
// write the parts, worker 0 that writes the manifest, and tools/din_dump that reads it.
//
//   DIR/MANIFEST                               text, see Manifest below
//   DIR/_SUCCESS                               written last: the dump is complete
//   DIR/TABLE/part-SSSSS-of-NNNNN.ids.npy      uint64 [n]        (NPY format 1.0, LE)
//   DIR/TABLE/part-SSSSS-of-NNNNN.emb.npy      float32 [n, dim]
//   DIR/TABLE/part-SSSSS-of-NNNNN.count.npy    uint32 [n]        (optional)
//   DIR/TABLE/part-SSSSS-of-NNNNN.txt          "id<TAB>v1 v2 ...\n" per row (TEXT tables)
//   DIR/TABLE/part-SSSSS-of-NNNNN.rows.npy     uint32 [n]  row numbers (incremental series)
//   DIR/TABLE/part-SSSSS-of-NNNNN.removed.npy  uint64 [m]  IDs evicted since the parent
//                                                          (a delta of a series)
//
// Part SSSSS of NNNNN holds exactly the IDs with ShardOf(id, NNNNN) == SSSSS
// (common/hash.h), in the order of their row numbers in the shard (creation order, a
// row number freed by eviction being taken by the next new row). Every file's checksum is
// XXH64 with seed 0 over all its bytes (the xxHash specification, Collet), so
// `xxhsum -H1 FILE` (XXH64) prints the same value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"

namespace din {

// Streaming XXH64 (seed 0). Update() may be called with any split of the input.
class Xxh64 {
 public:
  Xxh64();
  void Update(const void* data, size_t n);
  uint64_t Digest() const;
  static uint64_t Of(const void* data, size_t n) {
    Xxh64 h;
    h.Update(data, n);
    return h.Digest();
  }

 private:
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buffered_ = 0;
};

// "part-00003-of-00008" (shard numbers have five digits; shards <= 65536).
std::string DumpPartStem(uint32_t shard, uint32_t shards);

// A table name is used as a directory name: non-empty, no '/', no whitespace or
// control characters, not "." or "..".
Status CheckDumpTableName(const std::string& name);

// NPY format version 1.0 (numpy.lib.format): magic, version, little-endian uint16 header
// length, then a Python dict literal padded with spaces to a multiple of 64 bytes
// ending in '\n'. Only C-order little-endian arrays are written and read.
struct NpyInfo {
  std::string descr;  // "<u8", "<f4", "<u4"
  std::vector<uint64_t> shape;
  size_t header_bytes = 0;    // offset of the first element
  size_t item_bytes() const;  // from descr
  uint64_t elements() const;
};
std::string NpyHeader(const std::string& descr, const std::vector<uint64_t>& shape);
// Parses the header at the start of `data` (at least the whole header).
Result<NpyInfo> ParseNpyHeader(const std::string& data, const std::string& origin);
// Reads the header of the file (the stream is left after it).
Result<NpyInfo> ReadNpyHeader(std::FILE* f, const std::string& origin);

// MANIFEST: a text file, one record per line, fields separated by single spaces:
//   din-dump 1
//   step STEP
//   table NAME dim DIM shards SHARDS rows ROWS format npy|text counts 0|1
//         [state STATE_FLOATS optimizer NAME]     (checkpoints: parts have .state.npy)
//   part NAME SHARD rows ROWS
//   file RELATIVE_PATH BYTES XXH64_HEX          (the files of the part line above)
//   config                                     (the rest of the file is the TrainConfig
//   ...                                         in Protobuf text format)
// Tables appear in config order, parts in shard order.
struct ManifestFile {
  std::string name;  // relative to the dump directory
  uint64_t bytes = 0;
  uint64_t xxh64 = 0;
};
struct ManifestPart {
  uint32_t shard = 0;
  uint64_t rows = 0;
  std::vector<ManifestFile> files;
};
struct ManifestTable {
  std::string name;
  uint32_t dim = 0;
  uint32_t shards = 0;
  uint64_t rows = 0;
  bool text = false;
  bool counts = false;
  // Checkpoints (a dump with optimizer state): every part also has .state.npy
  // (float32 [n, state_floats]) and .count.npy; `optimizer` is non-empty.
  uint32_t state_floats = 0;
  std::string optimizer;
  bool checkpoint() const { return !optimizer.empty(); }
  std::vector<ManifestPart> parts;  // [shards], in shard order
};
struct Manifest {
  uint64_t step = 0;
  // Incremental dumps (optional `base NAME` and `parent NAME` lines after `step`): the
  // full dump a delta builds on and the dump just before it, as directory names next
  // to this one. A base names itself as base and has no parent.
  std::string base, parent;
  std::vector<ManifestTable> tables;
  std::string config_text;
  const ManifestTable* Find(const std::string& table) const;
};
std::string FormatManifest(const Manifest& m);
Result<Manifest> ParseManifest(const std::string& text, const std::string& origin);

// Reads dir/file.name whole and checks its size and XXH64 against the manifest's; the
// error names the file.
Result<std::string> ReadVerifiedFile(const std::string& dir, const ManifestFile& file);
// Checks dir/file.name's size and XXH64 against the manifest's, reading 1 MiB at a time
// (memory does not grow with the file); the error names the file.
Status VerifyManifestFile(const std::string& dir, const ManifestFile& file);
// The MANIFEST of a complete dump in `dir`: refuses a directory without _SUCCESS.
Result<Manifest> ReadCompleteManifest(const std::string& dir);

// fsyncs a directory, so that the entries created in it survive a crash.
Status SyncDirectory(const std::string& dir);
// Writes `contents` to path.tmp, fsyncs it, renames it to `path` and fsyncs the
// directory: readers see the old file or the whole new one.
Status WriteFileDurably(const std::string& path, const std::string& contents);

inline constexpr char kManifestName[] = "MANIFEST";
inline constexpr char kSuccessName[] = "_SUCCESS";

}  // namespace din
