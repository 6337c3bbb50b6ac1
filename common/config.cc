#include "common/config.h"

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

Status Positive(const std::string& where, const char* field, double v) {
  if (!(v > 0)) return Status::InvalidArgument(where + ": " + field + " must be > 0");
  return Status::Ok();
}

Status ValidateOptimizer(const std::string& where, config::OptimizerConfig* opt) {
  switch (opt->kind_case()) {
    case config::OptimizerConfig::KIND_NOT_SET:
      opt->mutable_adagrad();
      return Status::Ok();
    case config::OptimizerConfig::kSgd:
      return Positive(where, "sgd.learning_rate", opt->sgd().learning_rate());
    case config::OptimizerConfig::kAdagrad: {
      const auto& a = opt->adagrad();
      DIN_RETURN_IF_ERROR(Positive(where, "adagrad.learning_rate", a.learning_rate()));
      if (a.initial_accumulator() < 0)
        return Status::InvalidArgument(where + ": adagrad.initial_accumulator must be >= 0");
      return Positive(where, "adagrad.epsilon", a.epsilon() + a.initial_accumulator());
    }
    case config::OptimizerConfig::kAdam: {
      const auto& a = opt->adam();
      DIN_RETURN_IF_ERROR(Positive(where, "adam.learning_rate", a.learning_rate()));
      DIN_RETURN_IF_ERROR(Positive(where, "adam.epsilon", a.epsilon()));
      if (a.beta1() < 0 || a.beta1() >= 1 || a.beta2() < 0 || a.beta2() >= 1)
        return Status::InvalidArgument(where + ": adam.beta1 and adam.beta2 must be in [0, 1)");
      return Status::Ok();
    }
    case config::OptimizerConfig::kFtrl: {
      const auto& f = opt->ftrl();
      DIN_RETURN_IF_ERROR(Positive(where, "ftrl.alpha", f.alpha()));
      if (f.beta() < 0 || f.l1() < 0 || f.l2() < 0)
        return Status::InvalidArgument(where + ": ftrl.beta, ftrl.l1 and ftrl.l2 must be >= 0");
      return Status::Ok();
    }
  }
  return Status::InvalidArgument(where + ": unknown optimizer");
}

}  // namespace

Result<config::TrainConfig> ParseConfig(const std::string& text, const std::string& origin) {
  config::TrainConfig cfg;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors(origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg)) {
    return Status::InvalidArgument("cannot parse config " + origin + ":\n" + errors.text());
  }
  DIN_RETURN_IF_ERROR(ValidateConfig(&cfg).WithContext("config " + origin));
  return cfg;
}

Result<config::TrainConfig> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open config file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfig(ss.str(), path);
}

Status ValidateConfig(config::TrainConfig* cfg) {
  if (cfg->tables_size() == 0) return Status::InvalidArgument("no tables declared");
  std::set<std::string> names;
  for (int t = 0; t < cfg->tables_size(); ++t) {
    auto* table = cfg->mutable_tables(t);
    const std::string where =
        "tables[" + std::to_string(t) + "]" + (table->has_name() ? " (" + table->name() + ")" : "");
    if (table->name().empty()) return Status::InvalidArgument(where + ": name is required");
    if (!names.insert(table->name()).second)
      return Status::InvalidArgument(where + ": duplicate table name");
    if (table->dim() < 1 || table->dim() > 4096)
      return Status::InvalidArgument(where + ": dim must be in 1..4096, got " +
                                     std::to_string(table->dim()));
    if (table->shards() < 1 || table->shards() > 65536)
      return Status::InvalidArgument(where + ": shards must be in 1..65536, got " +
                                     std::to_string(table->shards()));
    if (table->mba_lambda() < 0)
      return Status::InvalidArgument(where + ": mba_lambda must be >= 0");
    const auto& init = table->initializer();
    if (init.stddev() < 0 || init.range() < 0)
      return Status::InvalidArgument(where + ": initializer stddev/range must be >= 0");
    DIN_RETURN_IF_ERROR(ValidateOptimizer(where, table->mutable_optimizer()));
  }
  const auto& ps = cfg->ps();
  if (ps.request_timeout_ms() == 0)
    return Status::InvalidArgument("ps.request_timeout_ms must be > 0");
  if (ps.max_request_keys() == 0) return Status::InvalidArgument("ps.max_request_keys must be > 0");
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
