#include "common/data/id_counts.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <utility>

#include "common/data/reader.h"
#include "common/hash.h"

namespace din {
namespace {

// Open addressing with linear probing; a slot with count 0 is empty.
class CountMap {
 public:
  explicit CountMap(uint64_t bytes) {
    uint64_t slots = std::max<uint64_t>(bytes / kCountSlotBytes, 64);
    slots = std::bit_floor(slots);
    slots_.assign(slots, Slot{});
    mask_ = slots - 1;
    limit_ = slots - slots / 4;
  }
  uint64_t bytes() const { return slots_.size() * sizeof(Slot); }
  bool full() const { return size_ >= limit_; }
  bool empty() const { return size_ == 0; }

  void Add(uint32_t table, uint64_t id) {
    uint64_t i = Mix64(id ^ (static_cast<uint64_t>(table) * 0x9e3779b97f4a7c15ULL)) & mask_;
    for (;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.count == 0) {
        s = Slot{id, table, 1};
        ++size_;
        return;
      }
      if (s.id == id && s.table == table) {
        if (s.count != std::numeric_limits<uint32_t>::max()) ++s.count;
        return;
      }
    }
  }

  // Empties the map into `sink`, table by table, `chunk` IDs at a time.
  Status Flush(size_t tables, size_t chunk, const CountSink& sink) {
    std::vector<uint64_t> ids;
    std::vector<uint32_t> counts;
    ids.reserve(std::min<uint64_t>(chunk, size_));
    counts.reserve(ids.capacity());
    for (size_t t = 0; t < tables; ++t) {
      for (const Slot& s : slots_) {
        if (s.count == 0 || s.table != t) continue;
        ids.push_back(s.id);
        counts.push_back(s.count);
        if (ids.size() >= chunk) {
          DIN_RETURN_IF_ERROR(sink(static_cast<int>(t), ids, counts));
          ids.clear();
          counts.clear();
        }
      }
      if (!ids.empty()) DIN_RETURN_IF_ERROR(sink(static_cast<int>(t), ids, counts));
      ids.clear();
      counts.clear();
    }
    std::fill(slots_.begin(), slots_.end(), Slot{});
    size_ = 0;
    return Status::Ok();
  }

 private:
  struct Slot {
    uint64_t id = 0;
    uint32_t table = 0;
    uint32_t count = 0;
  };
  static_assert(sizeof(Slot) == kCountSlotBytes);
  std::vector<Slot> slots_;
  uint64_t mask_ = 0, size_ = 0, limit_ = 0;
};

}  // namespace

Result<CountStats> CountIds(const config::DataConfig& cfg, const std::string& path, int worker,
                            int workers, uint64_t map_bytes, size_t chunk, const CountSink& sink) {
  DIN_ASSIGN_OR_RETURN(auto reader, Reader::Open(cfg, {path, worker, workers, false}));
  const Schema& schema = reader->schema();
  CountStats out;
  out.tables = schema.Tables();
  chunk = std::max<size_t>(chunk, 1);
  auto table_of = [&](const std::vector<FieldSpec>& fields) {
    std::vector<uint32_t> t;
    for (const auto& f : fields)
      t.push_back(static_cast<uint32_t>(std::find(out.tables.begin(), out.tables.end(), f.table) -
                                        out.tables.begin()));
    return t;
  };
  const std::vector<uint32_t> user_t = table_of(schema.users()),
                              cand_t = table_of(schema.candidates()),
                              beh_t = table_of(schema.behaviors()),
                              ctx_t = table_of(schema.contexts());
  CountMap map(map_bytes);
  out.map_bytes = map.bytes();
  Batch batch;
  std::vector<std::pair<uint32_t, uint64_t>> seen;  // (table, id) of one sample
  for (;;) {
    DIN_ASSIGN_OR_RETURN(bool more, reader->NextBatch(&batch));
    if (!more) break;
    for (size_t r = 0; r < batch.size; ++r) {
      seen.clear();
      auto collect = [&](const std::vector<IdColumn>& cols, const std::vector<uint32_t>& tables) {
        for (size_t c = 0; c < cols.size(); ++c)
          for (uint32_t k = cols[c].begin(r); k < cols[c].end(r); ++k)
            seen.emplace_back(tables[c], cols[c].ids[k]);
      };
      collect(batch.user_fields, user_t);
      collect(batch.candidate_fields, cand_t);
      collect(batch.behavior_fields, beh_t);
      collect(batch.context_fields, ctx_t);
      std::sort(seen.begin(), seen.end());
      seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
      for (const auto& [t, id] : seen) {
        if (map.full()) {
          DIN_RETURN_IF_ERROR(map.Flush(out.tables.size(), chunk, sink));
          ++out.flushes;
        }
        map.Add(t, id);
      }
    }
    out.samples += batch.size;
  }
  if (!map.empty()) {
    DIN_RETURN_IF_ERROR(map.Flush(out.tables.size(), chunk, sink));
    ++out.flushes;
  }
  out.bad_lines = reader->bad_lines();
  return out;
}

Result<IdCounts> CountIdsInMemory(const config::DataConfig& cfg, const std::string& path,
                                  int worker, int workers, uint64_t map_bytes) {
  IdCounts out;
  auto sink = [&](int t, std::span<const uint64_t> ids, std::span<const uint32_t> n) {
    if (out.counts.size() <= static_cast<size_t>(t)) out.counts.resize(t + 1);
    for (size_t i = 0; i < ids.size(); ++i) out.counts[t][ids[i]] += n[i];
    return Status::Ok();
  };
  DIN_ASSIGN_OR_RETURN(CountStats stats,
                       CountIds(cfg, path, worker, workers, map_bytes, 1 << 16, sink));
  out.tables = stats.tables;
  out.counts.resize(out.tables.size());
  out.samples = stats.samples;
  out.bad_lines = stats.bad_lines;
  out.flushes = stats.flushes;
  return out;
}

}  // namespace din
