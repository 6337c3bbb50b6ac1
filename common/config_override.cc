#include "common/config_override.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include "common/config.h"

namespace din {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Collects text-format errors into one line.
class Errors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!text_.empty()) text_ += "; ";
    text_ += "column " + std::to_string(column + 1) + ": " + message;
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// One path segment: `name` or `name[key]`.
struct Segment {
  std::string name;
  bool indexed = false;
  std::string key;
};

Result<std::vector<Segment>> SplitPath(std::string_view path) {
  std::vector<Segment> out;
  size_t i = 0;
  while (i <= path.size()) {
    Segment seg;
    size_t j = i;
    while (j < path.size() && path[j] != '.' && path[j] != '[') ++j;
    seg.name = std::string(path.substr(i, j - i));
    if (seg.name.empty()) return Status::InvalidArgument("empty field name");
    if (j < path.size() && path[j] == '[') {
      const size_t close = path.find(']', j);
      if (close == std::string_view::npos) return Status::InvalidArgument("missing ']'");
      seg.indexed = true;
      seg.key = std::string(path.substr(j + 1, close - j - 1));
      j = close + 1;
    }
    out.push_back(std::move(seg));
    if (j == path.size()) break;
    if (path[j] != '.') return Status::InvalidArgument("expected '.' after ']'");
    i = j + 1;
  }
  return out;
}

// The element of repeated message field `field` of `msg` selected by `key`: a position,
// or the value of the element's `name` field.
Result<Message*> SelectElement(Message* msg, const FieldDescriptor* field, const std::string& key) {
  const Reflection* refl = msg->GetReflection();
  const int n = refl->FieldSize(*msg, field);
  const FieldDescriptor* name_field = field->message_type()->FindFieldByName("name");
  if (name_field && name_field->type() == FieldDescriptor::TYPE_STRING &&
      !name_field->is_repeated()) {
    for (int i = 0; i < n; ++i) {
      Message* elem = refl->MutableRepeatedMessage(msg, field, i);
      if (elem->GetReflection()->GetString(*elem, name_field) == key) return elem;
    }
  }
  if (!key.empty() && key.find_first_not_of("0123456789") == std::string::npos) {
    const size_t index = std::stoul(key);
    if (index < static_cast<size_t>(n))
      return refl->MutableRepeatedMessage(msg, field, static_cast<int>(index));
  }
  return Status::InvalidArgument(std::string(field->name()) + " has no element named or at '" +
                                 key + "' (" + std::to_string(n) + " elements)");
}

// "name: value" in text format for the last field of the path.
std::string Snippet(const FieldDescriptor* field, std::string_view value) {
  const std::string name(field->name());
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    std::string_view body = value;
    if (!body.empty() && body.front() == '{') return name + " " + std::string(body);
    return name + " { " + std::string(body) + " }";
  }
  const bool is_string = field->cpp_type() == FieldDescriptor::CPPTYPE_STRING;
  auto scalar = [&](std::string_view v) {
    if (is_string && (v.empty() || (v.front() != '"' && v.front() != '\''))) return Quote(v);
    return std::string(v);
  };
  if (field->is_repeated()) {
    std::string_view list = value;
    if (!list.empty() && list.front() == '[' && list.back() == ']')
      list = list.substr(1, list.size() - 2);
    std::string out = name + ": [";
    size_t i = 0;
    bool first = true;
    while (i <= list.size() && !list.empty()) {
      size_t j = list.find(',', i);
      if (j == std::string_view::npos) j = list.size();
      std::string_view item = list.substr(i, j - i);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      out += (first ? "" : ", ") + scalar(item);
      first = false;
      i = j + 1;
      if (j == list.size()) break;
    }
    return out + "]";
  }
  return name + ": " + scalar(value);
}

}  // namespace

Status ApplyOverride(Message* root, std::string_view assignment) {
  const std::string where = "--set " + std::string(assignment);
  const size_t eq = assignment.find('=');
  if (eq == std::string_view::npos) return Status::InvalidArgument(where + ": expected PATH=VALUE");
  const std::string_view path = assignment.substr(0, eq);
  const std::string_view value = assignment.substr(eq + 1);
  auto segments = SplitPath(path);
  if (!segments.ok()) return segments.status().WithContext(where);

  Message* msg = root;
  for (size_t s = 0; s < segments->size(); ++s) {
    const Segment& seg = (*segments)[s];
    const bool last = s + 1 == segments->size();
    const FieldDescriptor* field = msg->GetDescriptor()->FindFieldByName(seg.name);
    if (!field)
      return Status::InvalidArgument(where + ": " + std::string(msg->GetDescriptor()->name()) +
                                     " has no field '" + seg.name + "'");
    const Reflection* refl = msg->GetReflection();
    if (seg.indexed) {
      if (!field->is_repeated() || field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE)
        return Status::InvalidArgument(where + ": '" + seg.name +
                                       "' is not a repeated message field and cannot be indexed");
      auto elem = SelectElement(msg, field, seg.key);
      if (!elem.ok()) return elem.status().WithContext(where);
      msg = *elem;
      if (last) {
        // The whole element: merge a text-format body into it.
        std::string body(value);
        if (!body.empty() && body.front() == '{' && body.back() == '}')
          body = body.substr(1, body.size() - 2);
        google::protobuf::TextFormat::Parser parser;
        Errors errors;
        parser.RecordErrorsTo(&errors);
        if (!parser.MergeFromString(body, msg))
          return Status::InvalidArgument(where + ": " + errors.text());
        return Status::Ok();
      }
      continue;
    }
    if (!last) {
      if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated())
        return Status::InvalidArgument(where + ": '" + seg.name +
                                       "' is not a message field (index repeated fields with "
                                       "[name] or [position])");
      msg = refl->MutableMessage(msg, field);
      continue;
    }
    // The last segment: replace the field's value.
    if (field->is_repeated() && field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE)
      refl->ClearField(msg, field);
    google::protobuf::TextFormat::Parser parser;
    Errors errors;
    parser.RecordErrorsTo(&errors);
    if (!parser.MergeFromString(Snippet(field, value), msg))
      return Status::InvalidArgument(where + ": " + errors.text());
  }
  return Status::Ok();
}

Status ApplyOverrides(const std::vector<std::string>& assignments, config::TrainConfig* cfg) {
  for (const auto& a : assignments) DIN_RETURN_IF_ERROR(ApplyOverride(cfg, a));
  if (assignments.empty()) return Status::Ok();
  return ValidateConfig(cfg).WithContext("after --set overrides");
}

Result<config::TrainConfig> LoadConfigWithOverrides(const std::string& path,
                                                    const std::vector<std::string>& assignments) {
  // Validated once, after the overrides: they may supply what the file leaves out (the
  // launcher sets security.key_dir, data.train_path...).
  DIN_ASSIGN_OR_RETURN(config::TrainConfig cfg, ReadConfigFile(path));
  for (const auto& a : assignments) DIN_RETURN_IF_ERROR(ApplyOverride(&cfg, a));
  DIN_RETURN_IF_ERROR(ValidateConfig(&cfg).WithContext(
      "config " + path + (assignments.empty() ? "" : " (with --set overrides)")));
  return cfg;
}

Result<std::vector<std::string>> ExtractRepeatedFlag(const std::string& name, int* argc,
                                                     char** argv) {
  std::vector<std::string> values;
  const std::string flag = "--" + name, flag_eq = flag + "=";
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if (arg == flag || arg == "-" + name) {
      if (i + 1 >= *argc) return Status::InvalidArgument(flag + " needs a value");
      values.push_back(argv[++i]);
    } else if (arg.rfind(flag_eq, 0) == 0) {
      values.push_back(arg.substr(flag_eq.size()));
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return values;
}

}  // namespace din
