#include "worker/export.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include <glog/logging.h>

#include "common/data/schema.h"
#include "common/dump_format.h"
#include "common/proto/model_config.pb.h"
#include "worker/dump_manifest.h"
#include "worker/model/backend.h"
#include "worker/predict.h"
#include "worker/trainer.h"

namespace din {
namespace {

const char* ActName(model::math::Act act) {
  switch (act) {
    case model::math::Act::kDice:
      return "DICE";
    case model::math::Act::kPRelu:
      return "PRELU";
    case model::math::Act::kRelu:
      return "RELU";
    case model::math::Act::kSigmoid:
      return "SIGMOID";
    default:
      return "NONE";
  }
}

Status WriteNpy(const std::string& path, std::span<const float> values,
                const std::vector<uint64_t>& shape) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Status::IoError("cannot create " + path + ": " + std::strerror(errno));
  const std::string header = NpyHeader("<f4", shape);
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  ok = ok && std::fwrite(values.data(), sizeof(float), values.size(), f) == values.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

Json FieldsJson(const std::vector<FieldSpec>& fields) {
  Json a = Json::array();
  for (const FieldSpec& f : fields)
    a.push_back({{"name", f.name},
                 {"table", f.table},
                 {"column", f.column},
                 {"multi_valued", f.multi_valued},
                 {"separator", std::string(1, f.separator)},
                 {"hash", f.hash}});
  return a;
}

}  // namespace

Result<Json> ModelJson(const config::TrainConfig& cfg, const model::ModelLayout& layout,
                       const std::string& checkpoint, uint64_t step) {
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg.data()));
  Json j;
  j["format"] = "din-model-export";
  j["version"] = 1;
  j["checkpoint"] = checkpoint;
  j["step"] = step;
  j["pooling"] = config::ModelConfig::Pooling_Name(cfg.model().pooling());
  j["activation"] = config::ModelConfig::Activation_Name(cfg.model().activation());
  j["attention_softmax"] = layout.softmax();
  j["max_history"] = layout.max_history();
  j["dice_epsilon"] = layout.dice_epsilon();
  j["dice_momentum"] = layout.dice_momentum();
  // Fields, per group in Batch order, and the tables they read.
  j["fields"] = {{"user", FieldsJson(schema.users())},
                 {"candidate", FieldsJson(schema.candidates())},
                 {"behavior", FieldsJson(schema.behaviors())},
                 {"context", FieldsJson(schema.contexts())}};
  Json tables = Json::object();
  for (const auto& t : cfg.tables())
    tables[t.name()] = {{"dim", t.dim()}, {"dump", "embeddings/" + t.name()}};
  j["tables"] = tables;
  j["item_fields"] = layout.item_fields();  // candidate fields forming the item
  j["item_cols"] = layout.item_cols();
  j["item_dim"] = layout.item_dim();
  // The top MLP's input columns: sum-pooled fields, then u, v_a, u*v_a at u_col.
  Json segments = Json::array();
  for (const auto& s : layout.segments()) {
    const char* group = s.group == model::TopSegment::Group::kUser        ? "user"
                        : s.group == model::TopSegment::Group::kCandidate ? "candidate"
                                                                          : "context";
    segments.push_back({{"group", group}, {"field", s.field}, {"col", s.col}, {"dim", s.dim}});
  }
  j["top_input"] = {{"width", layout.top_in()}, {"u_col", layout.u_col()}, {"fields", segments}};
  auto mlp = [&](const std::vector<model::LayerSpec>& layers, const std::string& prefix) {
    Json a = Json::array();
    for (size_t i = 0; i < layers.size(); ++i) {
      const auto& l = layers[i];
      const std::string name = prefix + "." + std::to_string(i);
      Json layer = {{"name", name},
                    {"in", l.in},
                    {"out", l.out},
                    {"activation", ActName(l.act)},
                    {"weight", "dense/" + name + ".w.npy"},
                    {"bias", "dense/" + name + ".b.npy"}};
      if (l.act == model::math::Act::kDice || l.act == model::math::Act::kPRelu)
        layer["alpha"] = "dense/" + name + ".alpha.npy";
      if (l.act == model::math::Act::kDice) {
        layer["running_mean"] = "dense/" + name + ".running_mean.npy";
        layer["running_var"] = "dense/" + name + ".running_var.npy";
      }
      a.push_back(layer);
    }
    return a;
  };
  j["attention"] = mlp(layout.attention(), "att");
  j["top"] = mlp(layout.top(), "top");
  const auto& d = cfg.data();
  j["data"] = {{"format", config::DataConfig::Format_Name(d.format())},
               {"label_column", schema.label_column()},
               {"num_columns", schema.num_columns()},
               {"column_separator", std::string(1, schema.column_separator())},
               {"max_history", d.max_history()},
               {"group_field", d.group_field()}};
  j["math"] = {
      "item vector: the embeddings of the item_fields concatenated (v_a for the candidate, "
      "e_j for behaviour j); an ID missing from its table reads as zeros",
      "behaviours: the newest min(data.max_history, max_history) of each list (oldest first "
      "in the file)",
      "attention (pooling ATTENTION): w_j = MLP_att([v_a, e_j, v_a - e_j, v_a * e_j]); with "
      "attention_softmax the w_j of a sample are softmax-normalised",
      "pooling: u = sum_j w_j e_j (SUM: w_j = 1, MEAN: w_j = 1/H)",
      "top input z [top_input.width]: each user, non-item candidate and context field's "
      "embeddings summed at its col; u at u_col, v_a at u_col + item_dim, u * v_a at "
      "u_col + 2 item_dim",
      "layer: s = x W + b (W [in, out]); DICE: p = sigmoid((s - running_mean) / sqrt(running_var "
      "+ dice_epsilon)), y = s (alpha + p (1 - alpha)); PRELU: y = s if s > 0 else alpha s; "
      "RELU; SIGMOID; NONE (the last layer): y = s",
      "probability = sigmoid(MLP_top(z))"};
  return j;
}

Status WriteDenseNpy(const model::ModelLayout& layout, std::span<const float> params,
                     std::span<const float> running, const std::string& dir) {
  for (const auto& t : layout.tensors()) {
    const auto values = params.subspan(t.offset, static_cast<size_t>(t.rows) * t.cols);
    const std::vector<uint64_t> shape =
        t.rows == 1
            ? std::vector<uint64_t>{static_cast<uint64_t>(t.cols)}
            : std::vector<uint64_t>{static_cast<uint64_t>(t.rows), static_cast<uint64_t>(t.cols)};
    DIN_RETURN_IF_ERROR(WriteNpy(dir + "/" + t.name + ".npy", values, shape));
  }
  for (const auto* mlp : {&layout.attention(), &layout.top()})
    for (size_t i = 0; i < mlp->size(); ++i) {
      const auto& l = (*mlp)[i];
      if (l.act != model::math::Act::kDice) continue;
      const std::string name = (mlp == &layout.attention() ? "att." : "top.") + std::to_string(i);
      const uint64_t out = static_cast<uint64_t>(l.out);
      DIN_RETURN_IF_ERROR(
          WriteNpy(dir + "/" + name + ".running_mean.npy", running.subspan(l.running, out), {out}));
      DIN_RETURN_IF_ERROR(WriteNpy(dir + "/" + name + ".running_var.npy",
                                   running.subspan(l.running + out, out), {out}));
    }
  return Status::Ok();
}

Result<uint64_t> WriteDenseExport(const config::TrainConfig& cfg, const std::string& checkpoint,
                                  int workers, uint64_t step, const std::string& root) {
  std::error_code ec;
  std::filesystem::create_directories(root + "/dense", ec);
  if (ec) return Status::IoError("export: cannot create " + root + "/dense: " + ec.message());
  DIN_ASSIGN_OR_RETURN(ModelShape shape, ModelShapeOf(cfg));
  DIN_ASSIGN_OR_RETURN(auto backend, model::CreateBackend("cpu", cfg.model(), shape.dims));
  DIN_RETURN_IF_ERROR(LoadInferenceDense(checkpoint, workers, cfg.model(), backend->params(),
                                         backend->running_stats()));
  DIN_RETURN_IF_ERROR(WriteDenseNpy(backend->layout(), backend->params(), backend->running_stats(),
                                    root + "/dense"));
  DIN_ASSIGN_OR_RETURN(Json model, ModelJson(cfg, backend->layout(), checkpoint, step));
  std::FILE* f = std::fopen((root + "/model.json").c_str(), "w");
  if (!f) return Status::IoError("export: cannot create " + root + "/model.json");
  const std::string text = model.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok)
    return Status::IoError("export: cannot write " + root + "/model.json");
  return backend->params().size();
}

Result<Json> ExportModel(const config::TrainConfig& cfg, PsClient& client, Collective& coll,
                         const std::string& out) {
  namespace fs = std::filesystem;
  if (out.empty()) return Status::InvalidArgument("export: no output directory given");
  auto chosen = ChooseCheckpoint(cfg, coll);
  if (!chosen.ok()) return chosen.status().WithContext("export");
  Json figures = Json::object();
  if (coll.rank() == 0) {
    std::error_code ec;
    const std::string root = fs::absolute(out, ec).string();
    DIN_ASSIGN_OR_RETURN(uint64_t params,
                         WriteDenseExport(cfg, chosen->dir, chosen->workers, chosen->step, root));
    DIN_ASSIGN_OR_RETURN(uint64_t rows, LoadTables(client, cfg, chosen->dir + "/tables"));
    DIN_RETURN_IF_ERROR(DumpTables(client, cfg, root + "/embeddings", chosen->step));
    LOG(INFO) << "export: " << rows << " rows and the dense network of " << chosen->dir << " in "
              << root;
    figures["mode"] = "export";
    figures["checkpoint"] = chosen->dir;
    figures["step"] = chosen->step;
    figures["export_dir"] = root;
    figures["rows"] = rows;
    figures["dense_params"] = params;
  }
  DIN_RETURN_IF_ERROR(coll.Barrier());
  return figures;
}

}  // namespace din
