// LaneHandler's DUMP and LOAD ops: writing the lane's shards as dump parts and inserting
// the rows of a checkpoint (ps/dump_writer.h), each answered in the reply header.
#include <algorithm>
#include <string>
#include <vector>

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
    for (uint32_t s = 0; s < shards_[t].size(); ++s) {
      const ShardStore* store = shards_[t][s].get();
      if (store == nullptr) continue;
      spec.shard = s;
      spec.changed = &changed_[t][s];
      spec.first_new = marked_rows_[t][s];
      Result<std::vector<ManifestFile>> files = DumpShard(*store, spec);
      if (!files.ok()) return fail(StatusCode::kInternal, files.status().ToString());
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
        marked_rows_[t][s] = shards_[t][s]->size();
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
    for (const ManifestPart& part : mt->parts) {
      for (const ManifestFile& f : part.files) {
        Result<std::string> data = ReadVerifiedFile(req.dir(), f);
        if (!data.ok()) return fail(StatusCode::kInvalidArgument, data.status());
      }
    }
    sources[t] = mt;
  }
  uint64_t loaded = 0;
  for (size_t t = 0; t < tables_.size(); ++t) {
    std::vector<ShardStore*> stores(shards_[t].size());
    bool any = false;
    for (size_t s = 0; s < stores.size(); ++s) {
      stores[s] = shards_[t][s].get();
      any = any || stores[s] != nullptr;
    }
    if (!any) continue;
    for (const ManifestPart& part : sources[t]->parts) {
      Result<uint64_t> rows = LoadCheckpointPart(req.dir(), *sources[t], part, stores);
      if (!rows.ok())
        return fail(StatusCode::kInternal, rows.status().WithContext("table " + tables_[t].name));
      loaded += *rows;
    }
  }
  rh->set_loaded_rows(loaded);
}

}  // namespace din
