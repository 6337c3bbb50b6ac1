#include "worker/worker_state.h"

#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include <glog/logging.h>

#include "common/proto/checkpoint.pb.h"
#include "worker/checkpoint.h"
#include "worker/dump_manifest.h"
#include "worker/report.h"

namespace din {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string FloatBytes(std::span<const float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size_bytes());
}

Status CheckFloats(const std::string& bytes, std::span<const float> out, const char* what,
                   const std::string& file) {
  if (bytes.size() != out.size_bytes())
    return Status::InvalidArgument(file + ": " + what + " has " +
                                   std::to_string(bytes.size() / sizeof(float)) +
                                   " values, the model has " + std::to_string(out.size()) +
                                   " (the checkpoint is of another model configuration)");
  return Status::Ok();
}

void CopyFloats(const std::string& bytes, std::span<float> out) {
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
}

// Checkpoint bookkeeping gathered to worker 0: the size and XXH64 (hex) of a state file.
struct StateFileInfo {
  uint64_t bytes;
  char xxh64[16];
};
static_assert(sizeof(StateFileInfo) == 24);

}  // namespace

Result<std::string> EncodeWorkerState(int worker, int workers, const TrainingPosition& position,
                                      const std::string& reader_state, const std::string& backend,
                                      const DenseState& dense) {
  ckpt::WorkerState ws;
  ws.set_worker(static_cast<uint32_t>(worker));
  ws.set_workers(static_cast<uint32_t>(workers));
  ws.set_step(position.step);
  ws.set_epoch(position.epoch);
  ws.set_reader(reader_state);
  ws.set_params(FloatBytes(dense.params));
  ws.set_adam_m(FloatBytes(dense.adam->first_moment()));
  ws.set_adam_v(FloatBytes(dense.adam->second_moment()));
  ws.set_adam_step(dense.adam->step());
  ws.set_running(FloatBytes(dense.running));
  ws.set_epoch_loss_sum(position.epoch_loss_sum);
  ws.set_epoch_samples(position.epoch_samples);
  ws.set_samples_trained(position.samples_trained);
  ws.set_train_rows(position.train_rows);
  ws.set_backend(backend);
  std::string bytes;
  if (!ws.SerializeToString(&bytes)) return Status::Internal("checkpoint: cannot serialize");
  return bytes;
}

Result<DecodedWorkerState> DecodeWorkerState(const std::string& bytes, const std::string& file,
                                             int worker, int workers, const DenseState& dense) {
  ckpt::WorkerState ws;
  if (!ws.ParseFromString(bytes)) return Status::InvalidArgument(file + ": cannot parse");
  // EncodeWorkerState sets every field; one missing is a state cut short.
  const auto* reflection = ws.GetReflection();
  const auto* descriptor = ws.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i)
    if (!reflection->HasField(ws, descriptor->field(i)))
      return Status::InvalidArgument(file + ": no " + descriptor->field(i)->name() +
                                     " (truncated?)");
  if (ws.worker() != static_cast<uint32_t>(worker) ||
      ws.workers() != static_cast<uint32_t>(workers))
    return Status::InvalidArgument(file + ": state of worker " + std::to_string(ws.worker()) +
                                   " of " + std::to_string(ws.workers()));
  DIN_RETURN_IF_ERROR(CheckFloats(ws.params(), dense.params, "params", file));
  DIN_RETURN_IF_ERROR(CheckFloats(ws.adam_m(), dense.adam->first_moment(), "adam_m", file));
  DIN_RETURN_IF_ERROR(CheckFloats(ws.adam_v(), dense.adam->second_moment(), "adam_v", file));
  DIN_RETURN_IF_ERROR(CheckFloats(ws.running(), dense.running, "running", file));
  CopyFloats(ws.params(), dense.params);
  CopyFloats(ws.adam_m(), dense.adam->first_moment());
  CopyFloats(ws.adam_v(), dense.adam->second_moment());
  CopyFloats(ws.running(), dense.running);
  dense.adam->set_step(ws.adam_step());
  DecodedWorkerState out;
  out.position.step = ws.step();
  out.position.epoch = ws.epoch();
  out.position.epoch_loss_sum = ws.epoch_loss_sum();
  out.position.epoch_samples = ws.epoch_samples();
  out.position.samples_trained = ws.samples_trained();
  out.position.train_rows = ws.train_rows();
  out.reader_state = ws.reader();
  return out;
}

Result<std::string> WriteCheckpoint(Collective& coll, PsClient& client,
                                    const config::TrainConfig& cfg, int num_servers, uint64_t step,
                                    uint32_t epoch, const std::string& state) {
  namespace fs = std::filesystem;
  const auto& ck = cfg.trainer().checkpoint();
  // Every worker's pushes are applied before the tables are saved.
  DIN_RETURN_IF_ERROR(coll.Barrier());
  std::error_code ec;
  const fs::path root = fs::absolute(ck.dir(), ec);
  if (ec) return Status::IoError("checkpoint: cannot resolve " + ck.dir());
  const std::string tmp = (root / (CheckpointName(step) + ".tmp")).string();
  if (coll.rank() == 0) {
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) return Status::IoError("checkpoint: cannot create " + tmp + ": " + ec.message());
  }
  DIN_RETURN_IF_ERROR(coll.Barrier());

  auto written = WriteCheckpointFile(tmp, WorkerStateName(coll.rank()), state);
  if (!written.ok())
    return written.status().WithContext("checkpoint of worker " + std::to_string(coll.rank()));
  const ckpt::CheckpointFile& file = *written;
  StateFileInfo info{file.bytes(), {}};
  std::memcpy(info.xxh64, file.xxh64().data(), sizeof(info.xxh64));
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(
      coll.GatherToRoot(std::as_bytes(std::span<const StateFileInfo>(&info, 1)), &all));

  std::string final_path = (root / CheckpointName(step)).string();
  if (coll.rank() == 0) {
    DIN_RETURN_IF_ERROR(SaveTables(client, cfg, tmp + "/tables", step));
    ckpt::CheckpointManifest m;
    m.set_version(1);
    m.set_step(step);
    m.set_epoch(epoch);
    m.set_workers(static_cast<uint32_t>(coll.size()));
    m.set_servers(static_cast<uint32_t>(num_servers));
    m.set_unix_time(static_cast<int64_t>(std::time(nullptr)));
    for (int w = 0; w < coll.size(); ++w) {
      StateFileInfo wi;
      std::memcpy(&wi, all.data() + static_cast<size_t>(w) * sizeof(wi), sizeof(wi));
      auto* f = m.add_files();
      f->set_name(WorkerStateName(w));
      f->set_bytes(wi.bytes);
      f->set_xxh64(std::string(wi.xxh64, sizeof(wi.xxh64)));
    }
    *m.mutable_config() = cfg;
    DIN_ASSIGN_OR_RETURN(final_path, FinishCheckpoint(tmp, m, ck.keep()));
  }
  // Nobody pushes again before the tables are on disk.
  DIN_RETURN_IF_ERROR(coll.Barrier());
  return final_path;
}

Result<OpenedCheckpoint> OpenCheckpoint(Collective& coll, PsClient& client,
                                        const config::TrainConfig& cfg) {
  // Worker 0 picks the checkpoint and loads the tables; every worker then reads its own
  // state file.
  std::string chosen;
  if (coll.rank() == 0) {
    std::vector<std::string> refused;
    ckpt::CheckpointManifest m;
    auto found = FindCheckpoint(cfg.trainer().resume_from(), &refused, &m);
    Status st = found.status();
    if (st.ok()) {
      if (m.workers() != static_cast<uint32_t>(coll.size()))
        st = Status::InvalidArgument(
            "resume: checkpoint " + *found + " was written by " + std::to_string(m.workers()) +
            " workers; resume it with the same number of workers (--workers " +
            std::to_string(m.workers()) + "); the servers may differ");
    }
    chosen = st.ok() ? "+" + *found : "-" + st.message();
  }
  DIN_RETURN_IF_ERROR(coll.Broadcast(&chosen));
  if (chosen.empty() || chosen[0] != '+') return Status::InvalidArgument(chosen.substr(1));
  OpenedCheckpoint out;
  out.dir = chosen.substr(1);
  if (coll.rank() == 0) {
    const double t0 = Now();
    LoadOptions load;
    load.files_verified = true;  // FindCheckpoint verified every file
    DIN_ASSIGN_OR_RETURN(uint64_t rows, LoadTables(client, cfg, out.dir + "/tables", load));
    LOG(INFO) << "resume: loaded " << rows << " rows from " << out.dir << "/tables in "
              << FormatNumber(Now() - t0, "%.2f") << " s";
  }
  out.file = out.dir + "/" + WorkerStateName(coll.rank());
  std::ifstream in(out.file, std::ios::binary);
  if (!in) return Status::NotFound("resume: cannot open " + out.file);
  out.state.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  // Rows are in place on every server before anyone pulls.
  DIN_RETURN_IF_ERROR(coll.Barrier());
  return out;
}

}  // namespace din
