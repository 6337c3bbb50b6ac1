// Writing the rows of a shard as embedding-dump parts (layout: common/dump_format.h).
//
// A part is written streaming: the NPY headers carry the row count known up front, then
// one pass over the shard's rows (ShardStore::ForEachRow, creation order) appends each
// row to every file of the part through a buffered writer that also computes the file's
// XXH64. No copy of the table is made; memory is two 1 MiB buffers per open file. Files
// are fsync'ed, then their directory, before DumpShard returns.
//
// Thread safety: DumpShard reads the store without a lock, so the caller must be the
// only user of the store for the duration (a server lane calls it from its own thread).
// Different shards may be dumped from different threads at once, also into the same
// table directory.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/dump_format.h"
#include "common/status.h"
#include "ps/shard_store.h"

namespace din {

// A file written through a buffer, checksummed (XXH64 of all bytes written) and made
// durable by Close(). Errors name the file.
//
// Full buffers are handed to a thread the writer owns, which hashes and write()s them
// while the caller fills the other buffer, so that filling, hashing and copying into the
// page cache overlap. (Starting writeback per buffer with sync_file_range measured no
// faster than the kernel's own writeback plus the final fsync.)
// Thread safety: one thread calls Append/Close; the I/O thread touches a buffer only
// between its hand-over and the next hand-over, which waits for it.
class DumpFileWriter {
 public:
  static constexpr size_t kBufferBytes = 1 << 20;

  // Creates or truncates `path`.
  static Result<std::unique_ptr<DumpFileWriter>> Create(const std::string& path);
  ~DumpFileWriter();  // closes without syncing when Close() was not called
  DumpFileWriter(const DumpFileWriter&) = delete;
  DumpFileWriter& operator=(const DumpFileWriter&) = delete;

  // Appends n bytes. A write error is kept and returned by this or a later call.
  Status Append(const void* data, size_t n) {
    return TryAppend(data, n) ? Status::Ok() : AppendSlow(data, n);
  }
  // Append() when the bytes fit in the buffer (the per-row fast path, without a
  // Status); false, with nothing appended, when Append() is needed.
  bool TryAppend(const void* data, size_t n) {
    if (n > kBufferBytes - used_) return false;
    std::memcpy(buffers_[current_].get() + used_, data, n);
    used_ += n;
    return true;
  }
  // Writes what is buffered, fsyncs and closes the file.
  Status Close();

  uint64_t bytes() const { return appended_ + used_; }
  // The checksum of the whole file; valid after Close().
  uint64_t xxh64() const { return hash_.Digest(); }
  const std::string& path() const { return path_; }

 private:
  DumpFileWriter(std::string path, int fd);
  Status AppendSlow(const void* data, size_t n);
  // Hands the current buffer to the I/O thread (after it finished the previous one) and
  // switches to the other buffer.
  Status HandOff();
  Status WaitIdle();  // until the I/O thread has written what it was given
  void IoLoop();
  void StopIo();

  const std::string path_;
  int fd_;
  std::unique_ptr<char[]> buffers_[2];
  int current_ = 0;
  size_t used_ = 0;
  uint64_t appended_ = 0;  // bytes handed to the I/O thread
  uint64_t written_ = 0;   // bytes written (I/O thread only)

  std::mutex mu_;
  std::condition_variable cv_;
  const char* job_ = nullptr;  // guarded by mu_: the buffer being written, or nullptr
  size_t job_bytes_ = 0;       // guarded by mu_
  bool stop_ = false;          // guarded by mu_
  Status io_error_;            // guarded by mu_
  Xxh64 hash_;                 // I/O thread only (read after it is joined)
  std::thread io_;
};

struct ShardDumpSpec {
  std::string dir;    // the dump directory; the part goes to dir/table/
  std::string table;  // must pass CheckDumpTableName
  uint32_t shard = 0;
  uint32_t shards = 1;
  bool text = false;    // part-SSSSS-of-NNNNN.txt instead of .ids.npy + .emb.npy
  bool counts = false;  // also .count.npy (NPY only)
  // A checkpoint part: also .state.npy (float32 [n, state_floats], the optimizer state
  // bytes as stored) and always .count.npy (NPY only).
  bool state = false;
  // A delta of an incremental dump: only rows at or past `first_new` (created since the
  // last mark) or with changed[row] != 0 (pushed or counted since), in creation order.
  bool delta = false;
  // When set (NPY only): also .step.npy, uint64 [n], each row's last-push step by row
  // number (UINT64_MAX for a row past its end: no record).
  const std::vector<uint64_t>* steps = nullptr;
  const std::vector<uint8_t>* changed = nullptr;
  uint64_t first_new = 0;
  // A dump of an incremental series: also .rows.npy (uint32 [n], each row's number in
  // the shard, ascending) and, when `removed` is set, .removed.npy (uint64 [m], the IDs
  // erased since the last mark, in erase order; NPY only).
  bool row_numbers = false;
  const std::vector<uint64_t>* removed = nullptr;
  bool Keeps(uint64_t row) const {
    return !delta || row >= first_new ||
           (changed != nullptr && row < changed->size() && (*changed)[row] != 0);
  }
};

// The rows DumpShard writes of `store` under `spec`.
uint64_t DumpShardRows(const ShardStore& store, const ShardDumpSpec& spec);

// Writes one part of `spec.table` from `store` (its dim is the table's dim) and returns
// its files, named relative to spec.dir, with sizes and checksums. Creates dir/table.
Result<std::vector<ManifestFile>> DumpShard(const ShardStore& store, const ShardDumpSpec& spec);

// One row of a checkpoint part into `store`: `weights` and `state` point at the row's
// bytes in the part's .emb.npy and .state.npy (float32, as the checkpoint stores them);
// a 16-bit store rounds them to nearest, which gives back the bits they were written from.
// Returns the row.
Result<uint32_t> LoadCheckpointRow(ShardStore* store, uint64_t key, const char* weights,
                                   const char* state, uint32_t count);

// Inserts the rows of one checkpoint part (`table` and `part` from a complete MANIFEST
// in `dir`) whose ShardOf(id, stores.size()) names a non-null store: key, weights,
// optimizer state and count, byte for byte (an existing row is overwritten). The four
// files are streamed in pieces of 16384 rows (memory does not grow with the
// part); types and shapes are checked before the first row, sizes and XXH64 against the
// MANIFEST as the bytes go by, and a mismatch fails the call after its last piece (rows
// already inserted stay; the worker verified every file before asking for the LOAD).
// Errors name the file. Returns the number of rows inserted. Rows with a count below
// `min_count` (a table's admission, docs/design.md §5) are not inserted. With `steps`
// and a part that has .step.npy, (*steps)[s][row] is set to the last-push step of each
// row inserted into stores[s] (each vector grown as needed with UINT64_MAX). Same thread
// safety as DumpShard, for every store.
Result<uint64_t> LoadCheckpointPart(const std::string& dir, const ManifestTable& table,
                                    const ManifestPart& part,
                                    const std::vector<ShardStore*>& stores, uint32_t min_count = 0,
                                    std::vector<std::vector<uint64_t>>* steps = nullptr);

// Writes dir/name as one NPY array (`descr`, `shape`, the `bytes` at `data`), fsynced,
// and returns its manifest entry.
Result<ManifestFile> WriteNpyFile(const std::string& dir, const std::string& name,
                                  const std::string& descr, const std::vector<uint64_t>& shape,
                                  const void* data, size_t bytes);

}  // namespace din
