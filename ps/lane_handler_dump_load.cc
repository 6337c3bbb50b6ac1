// LaneHandler's DUMP and LOAD ops: writing the lane's shards as dump parts and inserting
// the rows of a checkpoint (ps/dump_writer.h), each answered in the reply header.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <glog/logging.h>

#include "common/dump_format.h"
#include "common/net/wire.h"
#include "ps/dump_writer.h"
#include "ps/lane_handler.h"

namespace din {

void LaneHandler::Dump(const wire::DumpRequest& req, wire::ReplyHeader* rh) {
  auto fail = [&](StatusCode code, const std::string& why) {
    rh->clear_dump_parts();
    SetReplyStatus(Status(code, "server " + std::to_string(server_) + " lane " +
                                    std::to_string(lane_) + ": dump: " + why),
                   rh);
  };
  if (req.dir().empty()) return fail(StatusCode::kInvalidArgument, "no directory given");
  for (uint32_t t : req.text_tables())
    if (t >= tables_.size()) return fail(StatusCode::kInvalidArgument, "unknown table index");
  for (uint32_t t : req.count_tables())
    if (t >= tables_.size()) return fail(StatusCode::kInvalidArgument, "unknown table index");
  for (size_t t = 0; t < shards_.size(); ++t) {
    ShardDumpSpec spec;
    spec.dir = req.dir();
    spec.table = tables_[t].name;
    spec.shards = tables_[t].shards;
    spec.text =
        std::find(req.text_tables().begin(), req.text_tables().end(), t) != req.text_tables().end();
    spec.counts = std::find(req.count_tables().begin(), req.count_tables().end(), t) !=
                  req.count_tables().end();
    spec.state = req.with_state();
    if (spec.state) spec.text = false;
    spec.delta = req.delta();
    spec.row_numbers = req.incremental() && !spec.text;
    for (uint32_t s = 0; s < shards_[t].size(); ++s) {
      const ShardStore* store = shards_[t][s].get();
      if (store == nullptr) continue;
      spec.shard = s;
      spec.changed = &changed_[t][s];
      spec.first_new = marked_rows_[t][s];
      spec.removed = spec.row_numbers && spec.delta ? &store->erased_keys() : nullptr;
      // Checkpoints carry the admission and eviction state (docs/design.md §13): each
      // row's last-push step (ttl_steps; only when the steps are synchronous step
      // numbers, which a resumed job continues, not a lane's asynchronous push clock),
      // the shard's admission sketch and its shared default row.
      spec.steps = req.with_state() && tables_[t].ttl_steps > 0 && push_clock_ == 0
                       ? &last_push_[t][s]
                       : nullptr;
      Result<std::vector<ManifestFile>> files = DumpShard(*store, spec);
      if (!files.ok()) return fail(StatusCode::kInternal, files.status().ToString());
      if (req.with_state()) {
        const std::string stem = spec.table + "/" + DumpPartStem(s, spec.shards);
        if (const AdmissionSketch* sketch = sketches_[t][s].get()) {
          Result<ManifestFile> f = WriteNpyFile(spec.dir, stem + ".sketch.npy", "<u4",
                                                {sketch->depth(), sketch->width()},
                                                sketch->cells().data(), sketch->MemoryBytes());
          if (!f.ok()) return fail(StatusCode::kInternal, f.status().ToString());
          files->push_back(*f);
        }
        if (tables_[t].shared_default) {
          const std::vector<float>& row = default_rows_[t][s];
          Result<ManifestFile> f = WriteNpyFile(spec.dir, stem + ".default.npy", "<f4",
                                                {row.size()}, row.data(), row.size() * 4);
          if (!f.ok()) return fail(StatusCode::kInternal, f.status().ToString());
          files->push_back(*f);
        }
      }
      wire::DumpPart* part = rh->add_dump_parts();
      part->set_table(static_cast<uint32_t>(t));
      part->set_shard(s);
      part->set_rows(DumpShardRows(*store, spec));
      if (req.with_state()) {
        part->set_state_floats(store->state_floats());
        part->set_optimizer(tables_[t].optimizer->Name());
      }
      for (const ManifestFile& f : *files) {
        wire::DumpFile* df = part->add_files();
        df->set_name(f.name);
        df->set_bytes(f.bytes);
        df->set_xxh64(f.xxh64);
      }
    }
  }
  if (req.mark())
    for (size_t t = 0; t < shards_.size(); ++t)
      for (uint32_t s = 0; s < shards_[t].size(); ++s) {
        if (shards_[t][s] == nullptr) continue;
        changed_[t][s].clear();
        changed_[t][s].shrink_to_fit();
        marked_rows_[t][s] = shards_[t][s]->end_row();
        // The next delta lists the IDs erased from now on (only a series needs them).
        shards_[t][s]->ClearErased();
        shards_[t][s]->TrackErased(req.incremental());
      }
}

void LaneHandler::Load(const wire::LoadRequest& req, wire::ReplyHeader* rh) {
  auto fail = [&](StatusCode code, const Status& why) {
    SetReplyStatus(Status(code, "server " + std::to_string(server_) + " lane " +
                                    std::to_string(lane_) + ": load: " + why.ToString()),
                   rh);
  };
  if (req.dir().empty())
    return fail(StatusCode::kInvalidArgument, Status::InvalidArgument("no directory given"));
  Result<Manifest> manifest = ReadCompleteManifest(req.dir());
  if (!manifest.ok()) return fail(StatusCode::kInvalidArgument, manifest.status());
  // Check everything before inserting anything.
  std::vector<const ManifestTable*> sources(tables_.size(), nullptr);
  for (size_t t = 0; t < tables_.size(); ++t) {
    const TableSpec& spec = tables_[t];
    const ManifestTable* mt = manifest->Find(spec.name);
    const std::string where = req.dir() + "/" + kManifestName + ": table " + spec.name;
    if (mt == nullptr)
      return fail(StatusCode::kInvalidArgument, Status::InvalidArgument(where + " is missing"));
    if (!mt->checkpoint())
      return fail(StatusCode::kInvalidArgument,
                  Status::InvalidArgument(where + " has no optimizer state (not a checkpoint)"));
    const uint32_t state_floats = spec.optimizer->StateFloats(spec.dim);
    if (mt->dim != spec.dim || mt->state_floats != state_floats ||
        mt->optimizer != spec.optimizer->Name())
      return fail(
          StatusCode::kInvalidArgument,
          Status::InvalidArgument(where + " has dim " + std::to_string(mt->dim) + ", optimizer " +
                                  mt->optimizer + " with " + std::to_string(mt->state_floats) +
                                  " state floats; the config has dim " + std::to_string(spec.dim) +
                                  ", optimizer " + spec.optimizer->Name() + " with " +
                                  std::to_string(state_floats)));
    sources[t] = mt;
  }
  // The parts this lane reads: with the checkpoint's shard count, a part holds exactly
  // the rows of its shard, so only the parts of the lane's own shards; with another
  // count, every part once (its rows are filtered by ShardOf). Their files must be there
  // with the MANIFEST's sizes before any row is inserted; the contents are verified
  // while they stream (LoadCheckpointPart).
  std::vector<std::vector<const ManifestPart*>> reads(tables_.size());
  std::vector<std::vector<ShardStore*>> stores(tables_.size());
  for (size_t t = 0; t < tables_.size(); ++t) {
    bool any = false;
    stores[t].resize(shards_[t].size());
    for (size_t s = 0; s < stores[t].size(); ++s) {
      stores[t][s] = shards_[t][s].get();
      any = any || stores[t][s] != nullptr;
    }
    if (!any) continue;
    const bool same_shards = sources[t]->shards == stores[t].size();
    for (const ManifestPart& part : sources[t]->parts) {
      if (same_shards && (part.shard >= stores[t].size() || stores[t][part.shard] == nullptr))
        continue;
      for (const ManifestFile& f : part.files) {
        std::error_code ec;
        const std::string path = req.dir() + "/" + f.name;
        const uintmax_t bytes = std::filesystem::file_size(path, ec);
        if (ec)
          return fail(StatusCode::kInvalidArgument,
                      Status::IoError("cannot stat " + path + ": " + ec.message()));
        if (bytes != f.bytes)
          return fail(
              StatusCode::kInvalidArgument,
              Status::InvalidArgument(path + ": " + std::to_string(bytes) +
                                      " bytes, the MANIFEST says " + std::to_string(f.bytes)));
      }
      reads[t].push_back(&part);
    }
  }
  // The rows must fit the server's memory budget (with another shard count, this lane's
  // share of each part is estimated from the shards it serves).
  if (budget_ != nullptr && budget_->limit > 0) {
    int64_t need = 0, worst = 0;
    size_t worst_table = 0;
    for (size_t t = 0; t < tables_.size(); ++t) {
      uint64_t owned = 0;
      for (const ShardStore* store : stores[t]) owned += store != nullptr;
      const bool same_shards = sources[t]->shards == stores[t].size();
      uint64_t rows = 0;
      for (const ManifestPart* part : reads[t])
        rows += same_shards ? part->rows : part->rows * owned / stores[t].size();
      const int64_t bytes = static_cast<int64_t>(rows * RowCost(static_cast<int>(t)));
      need += bytes;
      if (bytes > worst) {
        worst = bytes;
        worst_table = t;
      }
    }
    const int64_t used = budget_->used.load(std::memory_order_relaxed);
    if (used + need > static_cast<int64_t>(budget_->limit))
      return fail(StatusCode::kResourceExhausted,
                  Status::ResourceExhausted(
                      "the checkpoint's rows for this lane need about " + std::to_string(need) +
                      " bytes (table " + tables_[worst_table].name + " the most, " +
                      std::to_string(worst) + "), the server's tables hold " +
                      std::to_string(used) + " and its memory budget ps.memory_limit_bytes is " +
                      std::to_string(budget_->limit) + " bytes; add servers or raise the budget"));
  }
  // A LOAD goes into empty shards (a resume); should a file turn out bad while it streams,
  // the shards are made empty again, so that a refused checkpoint loads nothing.
  bool empty = true;
  for (const auto& table : stores)
    for (const ShardStore* store : table) empty = empty && (store == nullptr || store->size() == 0);
  uint64_t loaded = 0;
  for (size_t t = 0; t < tables_.size(); ++t) {
    for (const ManifestPart* part : reads[t]) {
      // Rows below the table's min_count are not admitted (a checkpoint of another
      // config may hold them).
      Result<uint64_t> rows =
          LoadCheckpointPart(req.dir(), *sources[t], *part, stores[t], tables_[t].min_count,
                             tables_[t].ttl_steps > 0 ? &last_push_[t] : nullptr);
      if (!rows.ok()) {
        if (empty) {
          for (size_t u = 0; u < tables_.size(); ++u)
            for (auto& store : shards_[u])
              if (store != nullptr)
                store = std::make_unique<ShardStore>(
                    tables_[u].dim, tables_[u].optimizer->StateFloats(tables_[u].dim),
                    tables_[u].expected_rows, tables_[u].max_rows, tables_[u].storage);
        }
        return fail(
            StatusCode::kInternal,
            rows.status()
                .WithContext("table " + tables_[t].name)
                .WithContext(empty ? "nothing loaded" : "rows loaded before this error remain"));
      }
      loaded += *rows;
    }
  }
  // The lane state of a shard (admission sketch, shared default row) is restored when the
  // checkpoint has the same shard count and the same sketch size; otherwise it starts
  // afresh (its IDs now hash to other shards).
  for (size_t t = 0; t < tables_.size(); ++t) {
    if (sources[t]->shards != shards_[t].size()) continue;
    for (const ManifestPart* part : reads[t]) {
      const uint32_t s = part->shard;
      const std::string stem = tables_[t].name + "/" + DumpPartStem(s, sources[t]->shards);
      for (const ManifestFile& f : part->files) {
        const bool is_sketch = f.name == stem + ".sketch.npy" && sketches_[t][s] != nullptr;
        const bool is_default = f.name == stem + ".default.npy" && tables_[t].shared_default;
        if (!is_sketch && !is_default) continue;
        Result<std::string> bytes = ReadVerifiedFile(req.dir(), f);
        if (!bytes.ok()) return fail(StatusCode::kInvalidArgument, bytes.status());
        Result<NpyInfo> info = ParseNpyHeader(*bytes, req.dir() + "/" + f.name);
        if (!info.ok()) return fail(StatusCode::kInvalidArgument, info.status());
        const char* data = bytes->data() + info->header_bytes;
        const uint64_t n = info->elements();
        if (info->item_bytes() != 4 || info->header_bytes + n * 4 != bytes->size())
          return fail(StatusCode::kInvalidArgument,
                      Status::InvalidArgument(req.dir() + "/" + f.name +
                                              ": its size does not match its header"));
        if (is_sketch) {
          AdmissionSketch& sketch = *sketches_[t][s];
          if (info->descr != "<u4" ||
              info->shape != std::vector<uint64_t>{sketch.depth(), sketch.width()}) {
            LOG(WARNING) << req.dir() << "/" << f.name << ": a sketch of another size than "
                         << "admission.sketch_bytes and sketch_depth give; table "
                         << tables_[t].name << " shard " << s << " counts afresh";
            continue;
          }
          std::vector<uint32_t> cells(n);
          std::memcpy(cells.data(), data, n * 4);
          sketch.Restore(cells, 0);
        } else {
          std::vector<float>& row = default_rows_[t][s];
          if (info->descr != "<f4" || info->shape != std::vector<uint64_t>{row.size()})
            return fail(StatusCode::kInvalidArgument,
                        Status::InvalidArgument(req.dir() + "/" + f.name + ": expected <f4 [" +
                                                std::to_string(row.size()) + "]"));
          std::memcpy(row.data(), data, row.size() * 4);
        }
      }
    }
  }
  // A loaded table is past PREPASS (a resumed job does not count again): admission by
  // min_count is closed as after ADMIT. Online admission stays open.
  for (size_t t = 0; t < tables_.size(); ++t)
    if (tables_[t].gated() && !tables_[t].online_admission) admission_closed_[t] = true;
  rh->set_loaded_rows(loaded);
}

}  // namespace din
