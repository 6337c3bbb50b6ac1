#include "worker/predict.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include <glog/logging.h>

#include "common/batch.h"
#include "common/data/partition.h"
#include "common/data/reader.h"
#include "common/tsv_writer.h"
#include "worker/checkpoint.h"
#include "worker/dump_manifest.h"
#include "worker/evaluation.h"
#include "worker/model/backend.h"
#include "worker/model/dense_adam.h"
#include "worker/model/din_input.h"
#include "worker/trainer.h"
#include "worker/worker_state.h"

namespace din {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Result<uint64_t> ServerRows(PsClient& client) {
  DIN_ASSIGN_OR_RETURN(auto stats, client.Stats());
  uint64_t rows = 0;
  for (const auto& s : stats) rows += s.rows();
  return rows;
}

}  // namespace

Status LoadInferenceDense(const std::string& dir, int workers, const config::ModelConfig& model,
                          std::span<float> params, std::span<float> running) {
  model::DenseAdam adam(model.dense_adam(), params.size());
  std::vector<float> sum(running.size(), 0.0f);
  for (int w = 0; w < workers; ++w) {
    const std::string file = dir + "/" + WorkerStateName(w);
    std::ifstream in(file, std::ios::binary);
    if (!in) return Status::NotFound("cannot open " + file);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    DIN_RETURN_IF_ERROR(
        DecodeWorkerState(bytes, file, w, workers, DenseState{params, running, &adam}).status());
    for (size_t i = 0; i < running.size(); ++i) sum[i] += running[i];
  }
  // As AverageRunningStats: the sum over the workers times 1/W (nothing for one).
  if (workers > 1) {
    const float inv = 1.0f / static_cast<float>(workers);
    for (size_t i = 0; i < running.size(); ++i) running[i] = sum[i] * inv;
  }
  return Status::Ok();
}

Result<ChosenCheckpoint> ChooseCheckpoint(const config::TrainConfig& cfg, Collective& coll) {
  // Worker 0 picks the checkpoint; every worker learns it and its worker count.
  std::string chosen;
  if (coll.rank() == 0) {
    std::vector<std::string> refused;
    auto found = FindCheckpoint(cfg.trainer().resume_from(), &refused);
    Status st = found.status();
    uint32_t workers = 0;
    uint64_t step = 0;
    if (st.ok()) {
      auto m = VerifyCheckpoint(*found);
      st = m.status();
      if (st.ok()) {
        workers = m->workers();
        step = m->step();
      }
    }
    if (st.ok()) {
      chosen = "+";
      chosen += std::to_string(workers);
      chosen += ' ';
      chosen += std::to_string(step);
      chosen += ' ';
      chosen += *found;
    } else {
      chosen = "-";
      chosen += st.message();
    }
  }
  DIN_RETURN_IF_ERROR(coll.Broadcast(&chosen));
  if (chosen.empty() || chosen[0] != '+') return Status::InvalidArgument(chosen.substr(1));
  const size_t space = chosen.find(' '), space2 = chosen.find(' ', space + 1);
  ChosenCheckpoint out;
  out.workers = std::stoi(chosen.substr(1, space - 1));
  out.step = std::stoull(chosen.substr(space + 1, space2 - space - 1));
  out.dir = chosen.substr(space2 + 1);
  return out;
}

Result<Json> Predict(const config::TrainConfig& cfg, PsClient& client, Collective& coll,
                     const PredictOptions& options) {
  const double t0 = Now();
  if (options.data.empty()) return Status::InvalidArgument("predict: no input data given");
  if (options.output.empty()) return Status::InvalidArgument("predict: no output file given");
  auto chosen = ChooseCheckpoint(cfg, coll);
  if (!chosen.ok()) return chosen.status().WithContext("predict");
  const int ckpt_workers = chosen->workers;
  const std::string dir = chosen->dir;

  // The model, with the dense network of the checkpoint.
  DIN_ASSIGN_OR_RETURN(ModelShape shape, ModelShapeOf(cfg));
  DIN_ASSIGN_OR_RETURN(auto backend, model::CreateBackend(cfg.trainer().backend(), cfg.model(),
                                                          shape.dims, cfg.trainer().threads()));
  DIN_RETURN_IF_ERROR(LoadInferenceDense(dir, ckpt_workers, cfg.model(), backend->params(),
                                         backend->running_stats()));

  // The tables, through worker 0.
  uint64_t loaded = 0, rows_before = 0;
  if (coll.rank() == 0) {
    DIN_ASSIGN_OR_RETURN(loaded, LoadTables(client, cfg, dir + "/tables"));
    DIN_ASSIGN_OR_RETURN(rows_before, ServerRows(client));
    LOG(INFO) << "predict: loaded " << loaded << " rows and the dense network of " << dir;
  }
  DIN_RETURN_IF_ERROR(coll.Barrier());  // rows in place before anyone pulls

  // Equal byte ranges in file order: worker w's lines all come before worker w+1's, so
  // the gathered predictions are in input order.
  config::DataConfig data = cfg.data();
  data.set_batch_size(cfg.trainer().eval_batch_size());
  data.set_max_bad_lines(0);
  DIN_ASSIGN_OR_RETURN(auto files, ListInputFiles(options.data));
  DIN_ASSIGN_OR_RETURN(
      auto reader,
      Reader::OpenPartition(data, {std::make_shared<const std::vector<InputFile>>(std::move(files)),
                                   coll.rank(), coll.size(), /*shuffle_buffer=*/0}));
  std::vector<std::byte> all;
  DIN_RETURN_IF_ERROR(PredictAndGather(*reader, shape.field_tables, shape.table_dims, client,
                                       *backend, coll, &all));
  if (coll.rank() != 0) return Json::object();

  const size_t n = all.size() / sizeof(Prediction);
  TsvWriter out;
  DIN_RETURN_IF_ERROR(out.Open(options.output));
  for (size_t i = 0; i < n; ++i) {
    Prediction p;
    std::memcpy(&p, all.data() + i * sizeof(p), sizeof(p));
    // %.9g: the float itself, read back bit for bit.
    char buf[32];
    const int len = std::snprintf(buf, sizeof(buf), "%.9g\n", static_cast<double>(p.prob));
    out.Text(std::string_view(buf, static_cast<size_t>(len)));
  }
  DIN_RETURN_IF_ERROR(out.Close());
  const EvalMetrics m = MetricsOfPredictions(all);
  DIN_ASSIGN_OR_RETURN(uint64_t rows_after, ServerRows(client));
  Json j;
  j["mode"] = "predict";
  j["checkpoint"] = dir;
  j["data"] = options.data;
  j["output"] = options.output;
  j["predictions"] = n;
  j["test_auc"] = JsonNumber(m.auc);
  j["test_gauc"] = JsonNumber(m.gauc);
  j["test_logloss"] = JsonNumber(m.logloss);
  j["gauc_users"] = m.gauc_users;
  j["rows_loaded"] = loaded;
  j["server_rows_before"] = rows_before;
  j["server_rows_after"] = rows_after;
  j["workers"] = coll.size();
  j["servers"] = options.num_servers;
  j["checkpoint_workers"] = ckpt_workers;
  j["backend"] = std::string(backend->name());
  j["seconds"] = JsonNumber(Now() - t0, 3);
  return j;
}

}  // namespace din
