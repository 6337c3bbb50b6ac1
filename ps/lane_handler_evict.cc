// Eviction under a cap (when_full EVICT_LFU / EVICT_LRU, docs/design.md §5): the eviction
// word of each row, its score, and the batched eviction pass that runs between requests.
#include <algorithm>
#include <cmath>

#include "common/hash.h"
#include "ps/lane_handler.h"

namespace din {

namespace {

// The word of a row the lane has no record of (a checkpoint's, or one created before the
// word array grew): EVICT_LRU takes it as touched now, EVICT_LFU as not yet pushed.
uint32_t FreshWord(const TableSpec& spec, uint64_t now) {
  return spec.when_full == config::TableConfig::EVICT_LRU ? static_cast<uint32_t>(now) : 0;
}

}  // namespace

void LaneHandler::TouchEvict(int table, uint32_t shard, uint32_t row, bool created) {
  const TableSpec& spec = tables_[table];
  std::vector<uint32_t>& word = evict_word_[table][shard];
  if (word.size() <= row)
    word.resize(std::max<size_t>(row + 1, word.size() * 2), FreshWord(spec, now_));
  if (spec.when_full == config::TableConfig::EVICT_LRU)
    word[row] = static_cast<uint32_t>(now_);
  else if (created)
    word[row] = 0;
  else if (word[row] != UINT32_MAX)
    ++word[row];
}

uint64_t LaneHandler::EvictScore(int table, uint32_t shard, uint32_t row) const {
  const uint32_t w = evict_word_[table][shard][row];
  if (tables_[table].when_full == config::TableConfig::EVICT_LRU) {
    // Steps wrap at 2^32: the age is the difference modulo 2^32.
    const uint32_t age = static_cast<uint32_t>(now_) - w;
    return UINT32_MAX - age;
  }
  return uint64_t{shards_[table][shard]->Count(row)} + w;
}

void LaneHandler::EvictWhenFull() {
  for (size_t t = 0; t < tables_.size(); ++t) {
    const TableSpec& spec = tables_[t];
    if (!spec.evicts() || spec.max_rows == 0) continue;
    const uint64_t batch = std::max<uint64_t>(1, spec.max_rows / kEvictBatchDivisor);
    for (uint32_t s = 0; s < spec.shards; ++s) {
      const ShardStore* store = shards_[t][s].get();
      if (store == nullptr) continue;
      EvictPass& pass = evict_pass_[t][s];
      // Rows created since the last call: the pass visits at least kEvictVisitsPerRow
      // rows for each, so it frees rows faster than requests create them.
      const uint64_t created = store->size() > pass.seen_rows ? store->size() - pass.seen_rows : 0;
      if (!pass.active && store->size() + batch > spec.max_rows) {
        pass = EvictPass{};
        pass.active = true;
        pass.target = spec.max_rows > 2 * batch ? spec.max_rows - 2 * batch : 0;
        StartEvictPass(static_cast<int>(t), s);
      }
      if (pass.active)
        EvictDown(static_cast<int>(t), s,
                  std::max<uint64_t>(kEvictVisitsPerRequest, kEvictVisitsPerRow * created));
      pass.seen_rows = store->size();
    }
  }
}

void LaneHandler::StartEvictPass(int table, uint32_t shard) {
  const ShardStore* store = shards_[table][shard].get();
  const uint64_t end = store->end_row();
  std::vector<uint32_t>& word = evict_word_[table][shard];
  if (word.size() < end) word.resize(end, FreshWord(tables_[table], now_));
  EvictPass& pass = evict_pass_[table][shard];
  const uint64_t held = store->size();
  pass.quantile = held > pass.target
                      ? static_cast<double>(held - pass.target) / static_cast<double>(held)
                      : 0.0;
  // The sample: every live row of a small shard, else kEvictSample random live rows.
  std::vector<uint64_t>& sample = pass.sample;
  sample.clear();
  if (held <= kEvictSample) {
    for (uint32_t r = 0; r < end; ++r)
      if (store->live(r)) sample.push_back(EvictScore(table, shard, r));
  } else {
    for (size_t tries = 0; sample.size() < kEvictSample && tries < 8 * kEvictSample; ++tries) {
      const auto r = static_cast<uint32_t>(Mix64(++evict_draws_) % end);
      if (store->live(r)) sample.push_back(EvictScore(table, shard, r));
    }
  }
  std::sort(sample.begin(), sample.end());
  pass.lap = 0;
  pass.visited = 0;
  SetEvictThreshold(&pass);
}

void LaneHandler::SetEvictThreshold(EvictPass* pass) {
  pass->threshold = UINT64_MAX;
  if (pass->lap < 3 && !pass->sample.empty()) {
    const double at = std::ceil(pass->quantile * 1.25 * static_cast<double>(1 << pass->lap) *
                                static_cast<double>(pass->sample.size()));
    pass->threshold = pass->sample[std::min(pass->sample.size() - 1, static_cast<size_t>(at))];
  }
}

void LaneHandler::EvictDown(int table, uint32_t shard, uint64_t budget) {
  ShardStore* store = shards_[table][shard].get();
  EvictPass& pass = evict_pass_[table][shard];
  std::vector<uint32_t>& word = evict_word_[table][shard];
  uint64_t& cursor = evict_cursor_[table][shard];
  for (uint64_t visits = 0; visits < budget; ++visits) {
    if (store->size() <= pass.target) {
      pass.active = false;
      return;
    }
    const uint64_t end = store->end_row();
    if (word.size() < end) word.resize(end, FreshWord(tables_[table], now_));
    if (pass.visited >= end) {
      // A lap that fell short: the sample underestimated the quantile.
      ++pass.lap;
      pass.visited = 0;
      SetEvictThreshold(&pass);
    }
    ++pass.visited;
    if (cursor >= end) cursor = 0;
    const auto r = static_cast<uint32_t>(cursor++);
    if (store->live(r) && EvictScore(table, shard, r) <= pass.threshold) {
      store->Erase(r);
      ++evicted_[table][shard];
    }
  }
  if (store->size() <= pass.target) pass.active = false;
}

}  // namespace din
