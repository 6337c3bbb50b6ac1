#include "common/config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include "common/hash.h"

namespace din {
namespace {

// Collects parser errors as "origin:line:col: message".
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit ErrorCollector(std::string origin) : origin_(std::move(origin)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!text_.empty()) text_ += "\n";
    text_ += origin_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " +
             message;
  }
  const std::string& text() const { return text_; }

 private:
  std::string origin_;
  std::string text_;
};

// A number as text: the shortest form that reads back the same ("1e-08", "0.9").
std::string Num(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

Status Bad(const std::string& where, const std::string& what) {
  return Status::InvalidArgument(where.empty() ? what : where + ": " + what);
}

Status Positive(const std::string& where, const std::string& field, double v) {
  if (!(v > 0) || !std::isfinite(v)) return Bad(where, field + " must be > 0, got " + Num(v));
  return Status::Ok();
}

Status NonNegative(const std::string& where, const std::string& field, double v) {
  if (!(v >= 0) || !std::isfinite(v)) return Bad(where, field + " must be >= 0, got " + Num(v));
  return Status::Ok();
}

// In [0, 1): Adam's betas.
Status Beta(const std::string& where, const std::string& field, double v) {
  if (!(v >= 0 && v < 1)) return Bad(where, field + " must be in [0, 1), got " + Num(v));
  return Status::Ok();
}

Status ValidateOptimizer(const std::string& where, config::TableConfig* table) {
  // No optimizer section: the documented default. An empty one is a mistake (a kind was
  // meant and left out), not a request for the default.
  if (!table->has_optimizer()) {
    table->mutable_optimizer()->mutable_adagrad();
    return Status::Ok();
  }
  const config::OptimizerConfig& opt = table->optimizer();
  switch (opt.kind_case()) {
    case config::OptimizerConfig::KIND_NOT_SET:
      return Bad(
          where,
          "optimizer names no kind: write optimizer { sgd {...} }, adagrad, "
          "rowwise_adagrad, adam or ftrl (or leave optimizer out for adagrad with its defaults)");
    case config::OptimizerConfig::kSgd:
      return Positive(where, "optimizer.sgd.learning_rate", opt.sgd().learning_rate());
    case config::OptimizerConfig::kAdagrad: {
      const auto& a = opt.adagrad();
      DIN_RETURN_IF_ERROR(Positive(where, "optimizer.adagrad.learning_rate", a.learning_rate()));
      DIN_RETURN_IF_ERROR(
          NonNegative(where, "optimizer.adagrad.initial_accumulator", a.initial_accumulator()));
      DIN_RETURN_IF_ERROR(NonNegative(where, "optimizer.adagrad.epsilon", a.epsilon()));
      // The first step divides by sqrt(initial_accumulator + g^2) + epsilon.
      if (!(a.initial_accumulator() + a.epsilon() > 0))
        return Bad(where,
                   "optimizer.adagrad.initial_accumulator and optimizer.adagrad.epsilon are "
                   "both 0 (a zero gradient would divide by zero)");
      return Status::Ok();
    }
    case config::OptimizerConfig::kRowwiseAdagrad: {
      const auto& a = opt.rowwise_adagrad();
      DIN_RETURN_IF_ERROR(
          Positive(where, "optimizer.rowwise_adagrad.learning_rate", a.learning_rate()));
      DIN_RETURN_IF_ERROR(NonNegative(where, "optimizer.rowwise_adagrad.initial_accumulator",
                                      a.initial_accumulator()));
      DIN_RETURN_IF_ERROR(NonNegative(where, "optimizer.rowwise_adagrad.epsilon", a.epsilon()));
      if (!(a.initial_accumulator() + a.epsilon() > 0))
        return Bad(where,
                   "optimizer.rowwise_adagrad.initial_accumulator and "
                   "optimizer.rowwise_adagrad.epsilon are both 0 (a zero gradient would divide "
                   "by zero)");
      return Status::Ok();
    }
    case config::OptimizerConfig::kAdam: {
      const auto& a = opt.adam();
      DIN_RETURN_IF_ERROR(Positive(where, "optimizer.adam.learning_rate", a.learning_rate()));
      DIN_RETURN_IF_ERROR(Beta(where, "optimizer.adam.beta1", a.beta1()));
      DIN_RETURN_IF_ERROR(Beta(where, "optimizer.adam.beta2", a.beta2()));
      return Positive(where, "optimizer.adam.epsilon", a.epsilon());
    }
    case config::OptimizerConfig::kFtrl: {
      const auto& f = opt.ftrl();
      DIN_RETURN_IF_ERROR(Positive(where, "optimizer.ftrl.alpha", f.alpha()));
      DIN_RETURN_IF_ERROR(NonNegative(where, "optimizer.ftrl.beta", f.beta()));
      DIN_RETURN_IF_ERROR(NonNegative(where, "optimizer.ftrl.l1", f.l1()));
      return NonNegative(where, "optimizer.ftrl.l2", f.l2());
    }
  }
  return Bad(where, "unknown optimizer");
}

Status ValidateTable(const std::string& where, config::TableConfig* table) {
  if (table->dim() < 1 || table->dim() > kMaxDim)
    return Bad(where, "dim must be in 1.." + std::to_string(kMaxDim) + ", got " +
                          std::to_string(table->dim()));
  if (table->shards() < 1 || table->shards() > kMaxShards)
    return Bad(where, "shards must be in 1.." + std::to_string(kMaxShards) + ", got " +
                          std::to_string(table->shards()));
  DIN_RETURN_IF_ERROR(NonNegative(where, "mba_lambda", table->mba_lambda()));
  const auto& init = table->initializer();
  DIN_RETURN_IF_ERROR(NonNegative(where, "initializer.stddev", init.stddev()));
  DIN_RETURN_IF_ERROR(NonNegative(where, "initializer.range", init.range()));
  if (!std::isfinite(init.value()))
    return Bad(where, "initializer.value must be finite, got " + Num(init.value()));
  DIN_RETURN_IF_ERROR(ValidateOptimizer(where, table));

  const uint64_t cap = table->max_rows_per_shard();
  if (cap > kMaxRowsPerShard)
    return Bad(where, "max_rows_per_shard must be at most " + std::to_string(kMaxRowsPerShard) +
                          " (the most one shard can hold), got " + std::to_string(cap) +
                          "; use more shards");
  if (cap == 0 && (table->when_full() == config::TableConfig::EVICT_LFU ||
                   table->when_full() == config::TableConfig::EVICT_LRU))
    return Bad(where, "when_full: " + config::TableConfig::WhenFull_Name(table->when_full()) +
                          " needs max_rows_per_shard > 0 (the cap it evicts at)");
  // A capacity hint above the cap would size the index for rows the shard may never hold.
  if (cap > 0 && table->expected_rows_per_shard() > cap)
    return Bad(where, "expected_rows_per_shard (" +
                          std::to_string(table->expected_rows_per_shard()) +
                          ") exceeds max_rows_per_shard (" + std::to_string(cap) + ")");
  if (table->admission().min_count() > (1u << 30))
    return Bad(where, "admission.min_count must be at most 2^30, got " +
                          std::to_string(table->admission().min_count()));
  const auto& adm = table->admission();
  if (!(adm.probability() > 0.0 && adm.probability() <= 1.0))
    return Bad(where,
               "admission.probability must be in (0, 1], got " + std::to_string(adm.probability()));
  if (adm.sketch_depth() < 1 || adm.sketch_depth() > 16)
    return Bad(where, "admission.sketch_depth must be in 1..16, got " +
                          std::to_string(adm.sketch_depth()));
  // At least one counter per sketch row; at most 1 TiB.
  const uint64_t min_sketch = uint64_t{4} * adm.sketch_depth();
  if (adm.sketch_bytes() < min_sketch || adm.sketch_bytes() > (uint64_t{1} << 40))
    return Bad(where, "admission.sketch_bytes must be in " + std::to_string(min_sketch) +
                          "..2^40 (4 bytes per counter, sketch_depth rows), got " +
                          std::to_string(adm.sketch_bytes()));
  if (table->dump_counts() && table->dump_format() != config::TableConfig::NPY)
    return Bad(where, "dump_counts needs dump_format: NPY (text dumps have no counts)");
  return Status::Ok();
}

// Every data field must read a declared table, in every process: a server refuses such a
// job at start-up as the workers do. Only a config with a data section is checked
// (servers-only configs of tests and tools have none; training sets data.train_path).
// Behaviour fields use the table of their candidate field, which is checked itself.
Status ValidateDataTables(const config::TrainConfig& cfg) {
  const auto& data = cfg.data();
  auto declared = [&](const std::string& where, const std::string& table) -> Status {
    if (FindTable(cfg, table) >= 0) return Status::Ok();
    return Bad(where, "reads table '" + table +
                          "', which the config does not declare (tables { name: \"" + table +
                          "\" ... })");
  };
  if (data.format() == config::DataConfig::DIN_TSV) {
    if (data.fields_size() > 0)
      return Bad("data", "fields are given but format is DIN_TSV; set format: SCHEMA to use them");
    for (const char* field : {"user", "item", "cate"})
      DIN_RETURN_IF_ERROR(declared(std::string("data: din-tsv field '") + field + "'", field));
    return Status::Ok();
  }
  std::set<std::string> names;
  for (int f = 0; f < data.fields_size(); ++f) {
    const auto& field = data.fields(f);
    const std::string where = "data.fields[" + std::to_string(f) + "]";
    if (field.name().empty()) return Bad(where, "name is required");
    if (!names.insert(field.name()).second)
      return Bad(where + " (" + field.name() + ")", "duplicate field name");
    if (field.kind() == config::FieldConfig::BEHAVIOR) continue;
    DIN_RETURN_IF_ERROR(declared(where + " (" + field.name() + ")",
                                 field.table().empty() ? field.name() : field.table()));
  }
  return Status::Ok();
}

Status ValidateModel(const config::ModelConfig& m) {
  const std::string where = "model";
  for (int h : m.attention_hidden())
    if (h < 1) return Bad(where, "attention_hidden sizes must be >= 1, got " + std::to_string(h));
  for (int h : m.top_hidden())
    if (h < 1) return Bad(where, "top_hidden sizes must be >= 1, got " + std::to_string(h));
  if (m.max_history() < 1)
    return Bad(where, "max_history must be >= 1, got " + std::to_string(m.max_history()));
  for (int f : m.item_fields())
    if (f < 0) return Bad(where, "item_fields must be >= 0, got " + std::to_string(f));
  if (!(m.dice_momentum() >= 0 && m.dice_momentum() <= 1))
    return Bad(where, "dice_momentum must be in [0, 1], got " + Num(m.dice_momentum()));
  DIN_RETURN_IF_ERROR(Positive(where, "dice_epsilon", m.dice_epsilon()));
  const auto& a = m.dense_adam();
  DIN_RETURN_IF_ERROR(Positive(where, "dense_adam.learning_rate", a.learning_rate()));
  DIN_RETURN_IF_ERROR(Beta(where, "dense_adam.beta1", a.beta1()));
  DIN_RETURN_IF_ERROR(Beta(where, "dense_adam.beta2", a.beta2()));
  DIN_RETURN_IF_ERROR(Positive(where, "dense_adam.epsilon", a.epsilon()));
  return NonNegative(where, "dense_adam.weight_decay", a.weight_decay());
}

Status ValidateTrainer(const config::TrainerConfig& t) {
  const std::string where = "trainer";
  if (t.epochs() < 1) return Bad(where, "epochs must be >= 1, got 0");
  if (t.staleness() > 1)
    return Bad(where, "staleness must be 0 or 1, got " + std::to_string(t.staleness()));
  if (t.eval_batch_size() < 1) return Bad(where, "eval_batch_size must be >= 1, got 0");
  if (t.backend() != "auto" && t.backend() != "cpu" && t.backend() != "cuda")
    return Bad(where, "backend must be \"auto\", \"cpu\" or \"cuda\", got \"" + t.backend() + "\"");
  if (t.threads() < 1)
    return Bad(where, "threads must be >= 1, got " + std::to_string(t.threads()));
  DIN_RETURN_IF_ERROR(Positive(where, "log_every_seconds", t.log_every_seconds()));
  const auto& c = t.checkpoint();
  if (c.keep() < 1) return Bad(where, "checkpoint.keep must be >= 1, got 0");
  DIN_RETURN_IF_ERROR(NonNegative(where, "checkpoint.every_minutes", c.every_minutes()));
  if (c.dir().empty() && (c.every_steps() > 0 || c.every_minutes() > 0))
    return Bad(where,
               "checkpoint.every_steps or checkpoint.every_minutes is set but "
               "checkpoint.dir is empty (no checkpoints would be written)");
  return Status::Ok();
}

}  // namespace

namespace {

Result<config::TrainConfig> ParseConfigText(const std::string& text, const std::string& origin) {
  config::TrainConfig cfg;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors(origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg)) {
    return Status::InvalidArgument("cannot parse config " + origin + ":\n" + errors.text());
  }
  return cfg;
}

}  // namespace

Result<config::TrainConfig> ParseConfig(const std::string& text, const std::string& origin) {
  DIN_ASSIGN_OR_RETURN(config::TrainConfig cfg, ParseConfigText(text, origin));
  DIN_RETURN_IF_ERROR(ValidateConfig(&cfg).WithContext("config " + origin));
  return cfg;
}

Result<config::TrainConfig> ReadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfigText(ss.str(), path);
}

Result<config::TrainConfig> LoadConfig(const std::string& path) {
  DIN_ASSIGN_OR_RETURN(config::TrainConfig cfg, ReadConfigFile(path));
  DIN_RETURN_IF_ERROR(ValidateConfig(&cfg).WithContext("config " + path));
  return cfg;
}

Status ValidateConfig(config::TrainConfig* cfg) {
  if (cfg->tables_size() == 0) return Status::InvalidArgument("no tables declared");
  std::set<std::string> names;
  for (int t = 0; t < cfg->tables_size(); ++t) {
    auto* table = cfg->mutable_tables(t);
    const std::string where =
        "tables[" + std::to_string(t) + "]" + (table->has_name() ? " (" + table->name() + ")" : "");
    if (table->name().empty()) return Bad(where, "name is required");
    if (!names.insert(table->name()).second) return Bad(where, "duplicate table name");
    DIN_RETURN_IF_ERROR(ValidateTable(where, table));
  }
  const auto& ps = cfg->ps();
  if (ps.interface().empty()) return Bad("ps", "interface must not be empty");
  if (ps.request_timeout_ms() == 0) return Bad("ps", "request_timeout_ms must be > 0");
  if (ps.max_request_keys() == 0) return Bad("ps", "max_request_keys must be > 0");
  if (cfg->has_data()) DIN_RETURN_IF_ERROR(ValidateDataTables(*cfg));
  DIN_RETURN_IF_ERROR(ValidateModel(cfg->model()));
  DIN_RETURN_IF_ERROR(ValidateTrainer(cfg->trainer()));
  if (cfg->security().curve() && cfg->security().key_dir().empty())
    return Bad("security",
               "curve is true but key_dir is empty (launch/din-train creates the "
               "keys and sets it; elsewhere set security.key_dir to a directory "
               "of key files)");
  return Status::Ok();
}

uint64_t TablesFingerprint(const config::TrainConfig& cfg) {
  uint64_t h = 0x243f6a8885a308d3ULL;
  for (const auto& table : cfg.tables()) {
    std::string bytes;
    // Deterministic serialization: the same message gives the same bytes in every process.
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);
    table.SerializeToCodedStream(&coded);
    coded.Trim();
    h = Mix64(h ^ HashToken(bytes));
  }
  return h;
}

int FindTable(const config::TrainConfig& cfg, const std::string& name) {
  for (int t = 0; t < cfg.tables_size(); ++t)
    if (cfg.tables(t).name() == name) return t;
  return -1;
}

}  // namespace din
