#include "common/data/id_counts.h"

#include <algorithm>
#include <utility>

#include "common/data/reader.h"

namespace din {

Result<IdCounts> CountIds(const config::DataConfig& cfg, const std::string& path, int worker,
                          int workers) {
  DIN_ASSIGN_OR_RETURN(auto reader, Reader::Open(cfg, {path, worker, workers, false}));
  const Schema& schema = reader->schema();
  IdCounts out;
  out.tables = schema.Tables();
  out.counts.resize(out.tables.size());
  auto table_of = [&](const std::vector<FieldSpec>& fields) {
    std::vector<int> t;
    for (const auto& f : fields)
      t.push_back(static_cast<int>(std::find(out.tables.begin(), out.tables.end(), f.table) -
                                   out.tables.begin()));
    return t;
  };
  const std::vector<int> user_t = table_of(schema.users()), cand_t = table_of(schema.candidates()),
                         beh_t = table_of(schema.behaviors()), ctx_t = table_of(schema.contexts());
  Batch batch;
  std::vector<std::pair<int, uint64_t>> seen;  // (table, id) of one sample
  for (;;) {
    DIN_ASSIGN_OR_RETURN(bool more, reader->NextBatch(&batch));
    if (!more) break;
    for (size_t r = 0; r < batch.size; ++r) {
      seen.clear();
      auto collect = [&](const std::vector<IdColumn>& cols, const std::vector<int>& tables) {
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
      for (const auto& [t, id] : seen) ++out.counts[t][id];
    }
    out.samples += batch.size;
  }
  out.bad_lines = reader->bad_lines();
  return out;
}

}  // namespace din
