// The mini-batch as the input pipeline produces it and the trainer consumes it.
// Columnar, reused between batches (Clear() keeps capacity), no per-sample allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace din {

// A list of IDs per sample in CSR form: sample r owns ids[offsets[r] .. offsets[r+1]).
// offsets has size()+1 entries and offsets[0] == 0. A single-valued field has exactly
// one ID per sample; a behaviour list may be empty for a sample.
struct IdColumn {
  std::vector<uint64_t> ids;
  std::vector<uint32_t> offsets{0};

  size_t samples() const { return offsets.size() - 1; }
  uint32_t begin(size_t r) const { return offsets[r]; }
  uint32_t end(size_t r) const { return offsets[r + 1]; }
  uint32_t length(size_t r) const { return offsets[r + 1] - offsets[r]; }
  void Clear() {
    ids.clear();
    offsets.assign(1, 0);
  }
};

// One mini-batch. The field vectors follow the order of the schema (DataConfig);
// each field's table is named there.
struct Batch {
  size_t size = 0;                         // number of samples
  std::vector<float> labels;               // [size], 0 or 1
  std::vector<uint64_t> users;             // [size], the key GAUC groups by (the user column)
  std::vector<IdColumn> user_fields;       // user-profile fields; multi-valued are sum-pooled
  std::vector<IdColumn> candidate_fields;  // candidate ad fields, one ID per sample each
  // Behaviour lists, aligned one-to-one with candidate_fields (same tables). All have the
  // same offsets (history length per sample), oldest first, already cut to max_history.
  std::vector<IdColumn> behavior_fields;
  std::vector<IdColumn> context_fields;  // context fields

  // Appends sample `r` of `from`, a Batch of the same schema (same number of columns
  // in each group).
  void AppendSample(const Batch& from, size_t r) {
    for (auto [src, dst] : {std::pair{&from.user_fields, &user_fields},
                            std::pair{&from.candidate_fields, &candidate_fields},
                            std::pair{&from.behavior_fields, &behavior_fields},
                            std::pair{&from.context_fields, &context_fields}})
      for (size_t c = 0; c < src->size(); ++c) {
        const IdColumn& in = (*src)[c];
        IdColumn& out = (*dst)[c];
        out.ids.insert(out.ids.end(), in.ids.begin() + in.begin(r), in.ids.begin() + in.end(r));
        out.offsets.push_back(static_cast<uint32_t>(out.ids.size()));
      }
    labels.push_back(from.labels[r]);
    users.push_back(from.users[r]);
    ++size;
  }

  void Clear() {
    size = 0;
    labels.clear();
    users.clear();
    for (auto* group : {&user_fields, &candidate_fields, &behavior_fields, &context_fields})
      for (auto& col : *group) col.Clear();
  }
};

}  // namespace din
