#include "worker/dump_manifest.h"

#include <filesystem>
#include <system_error>

#include <google/protobuf/text_format.h>

#include "common/dump_format.h"

namespace din {

Status WriteDumpManifest(const std::string& dir, const config::TrainConfig& cfg, uint64_t step,
                         const std::vector<wire::DumpPart>& parts, const std::string& base,
                         const std::string& parent) {
  Manifest m;
  m.step = step;
  m.base = base;
  m.parent = parent;
  for (const auto& t : cfg.tables()) {
    ManifestTable mt;
    mt.name = t.name();
    mt.dim = t.dim();
    mt.shards = t.shards();
    mt.text = t.dump_format() == config::TableConfig::TEXT;
    mt.counts = !mt.text && t.dump_counts();
    mt.parts.resize(t.shards());
    m.tables.push_back(std::move(mt));
  }
  std::vector<std::vector<bool>> seen(m.tables.size());
  for (size_t t = 0; t < m.tables.size(); ++t) seen[t].assign(m.tables[t].shards, false);
  for (const wire::DumpPart& p : parts) {
    if (p.table() >= m.tables.size() || p.shard() >= m.tables[p.table()].shards)
      return Status::Internal("dump: a server reported an unknown part (table " +
                              std::to_string(p.table()) + ", shard " + std::to_string(p.shard()) +
                              ")");
    ManifestTable& t = m.tables[p.table()];
    if (seen[p.table()][p.shard()])
      return Status::Internal("dump: part " + std::to_string(p.shard()) + " of table " + t.name +
                              " reported twice");
    seen[p.table()][p.shard()] = true;
    ManifestPart& mp = t.parts[p.shard()];
    mp.shard = p.shard();
    mp.rows = p.rows();
    t.rows += p.rows();
    for (const auto& f : p.files()) mp.files.push_back({f.name(), f.bytes(), f.xxh64()});
    if (p.has_optimizer()) {
      t.text = false;
      t.counts = true;
      t.optimizer = p.optimizer();
      t.state_floats = p.state_floats();
    }
  }
  for (size_t t = 0; t < m.tables.size(); ++t)
    for (uint32_t s = 0; s < m.tables[t].shards; ++s)
      if (!seen[t][s])
        return Status::Internal("dump: no server wrote part " + std::to_string(s) + " of table " +
                                m.tables[t].name);
  google::protobuf::TextFormat::PrintToString(cfg, &m.config_text);

  DIN_RETURN_IF_ERROR(WriteFileDurably(dir + "/" + kManifestName, FormatManifest(m)));
  return WriteFileDurably(dir + "/" + kSuccessName, "");
}

Status DumpTables(PsClient& client, const config::TrainConfig& cfg, const std::string& dir,
                  uint64_t step, const DumpOptions& options) {
  if (dir.empty()) return Status::InvalidArgument("dump: no directory given");
  for (const auto& t : cfg.tables()) DIN_RETURN_IF_ERROR(CheckDumpTableName(t.name()));
  std::error_code ec;
  const std::string abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) return Status::IoError("dump: cannot resolve " + dir + ": " + ec.message());
  std::filesystem::create_directories(abs, ec);
  if (!std::filesystem::is_directory(abs))
    return Status::IoError("dump: cannot create directory " + abs +
                           (ec ? ": " + ec.message() : ""));
  // A reader must never take a half-overwritten directory for a complete dump.
  for (const char* name : {kSuccessName, kManifestName}) {
    std::filesystem::remove(std::filesystem::path(abs) / name, ec);
    if (ec) return Status::IoError("dump: cannot remove " + abs + "/" + name + ": " + ec.message());
  }
  DIN_RETURN_IF_ERROR(SyncDirectory(abs));
  DIN_ASSIGN_OR_RETURN(std::vector<wire::DumpPart> parts, client.Dump(abs, options));
  return WriteDumpManifest(abs, cfg, step, parts, options.base, options.parent)
      .WithContext("dump to " + abs);
}

Status SaveTables(PsClient& client, const config::TrainConfig& cfg, const std::string& dir,
                  uint64_t step, DumpOptions options) {
  options.with_state = true;
  return DumpTables(client, cfg, dir, step, options);
}

Result<uint64_t> LoadTables(PsClient& client, const config::TrainConfig& cfg,
                            const std::string& dir, const LoadOptions& options) {
  if (dir.empty()) return Status::InvalidArgument("load: no directory given");
  std::error_code ec;
  const std::string abs = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (ec) return Status::IoError("load: cannot resolve " + dir + ": " + ec.message());
  // The cheap checks first, with one clear message.
  Result<Manifest> m = ReadCompleteManifest(abs);
  if (!m.ok()) return m.status().WithContext("load from " + abs);
  for (const auto& t : cfg.tables()) {
    const ManifestTable* mt = m->Find(t.name());
    const std::string where = abs + "/" + kManifestName + ": table " + t.name();
    if (mt == nullptr) return Status::InvalidArgument("load: " + where + " is missing");
    if (!mt->checkpoint())
      return Status::InvalidArgument("load: " + where +
                                     " has no optimizer state (a dump, not a checkpoint)");
    if (mt->dim != t.dim())
      return Status::InvalidArgument("load: " + where + " has dim " + std::to_string(mt->dim) +
                                     ", the config " + std::to_string(t.dim()));
  }
  // Every file is intact before any lane inserts a row, so a refused checkpoint loads
  // nothing (the lanes verify again as they stream, against a file changed since).
  if (!options.files_verified)
    for (const auto& t : cfg.tables())
      for (const auto& part : m->Find(t.name())->parts)
        for (const auto& f : part.files)
          DIN_RETURN_IF_ERROR(VerifyManifestFile(abs, f).WithContext("load"));
  return client.Load(abs, options);
}

}  // namespace din
