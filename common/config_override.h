// Command-line overrides of a TrainConfig: `--set PATH=VALUE`, applied by every process of
// a job (servers and workers) right after the config file is read, so that all agree.
//
// PATH is a dotted field path from TrainConfig. A repeated message field is indexed
// either by position or by the element's `name` field:
//   model.pooling=SUM                    enum by name
//   trainer.epochs=2                     scalar
//   tables[item].mba_lambda=0.01         the element of `tables` whose name is "item"
//   tables[0].optimizer={sgd {learning_rate: 0.1}}   a message, merged (text format)
//   model.top_hidden=[200,80]            a repeated scalar is replaced by the list
//   data.train_path=/data/train.tsv      strings need no quotes
// Sub-messages on the path are created when absent.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/proto/config.pb.h"
#include "common/status.h"

namespace google::protobuf {
class Message;
}

namespace din {

// Applies one `PATH=VALUE` assignment to `root`. Fails (InvalidArgument, naming the
// assignment) on an unknown field, a missing element, or a value that does not parse.
Status ApplyOverride(google::protobuf::Message* root, std::string_view assignment);

// Applies every assignment in order, then validates the result (ValidateConfig).
Status ApplyOverrides(const std::vector<std::string>& assignments, config::TrainConfig* cfg);

// Reads the file, applies every assignment in order, then validates the result once
// (a config the overrides complete is accepted).
Result<config::TrainConfig> LoadConfigWithOverrides(const std::string& path,
                                                    const std::vector<std::string>& assignments);

// Removes every `--NAME VALUE` and `--NAME=VALUE` from argv (a flag gflags cannot repeat)
// and returns the values in order. Fails when a `--NAME` has no value after it.
Result<std::vector<std::string>> ExtractRepeatedFlag(const std::string& name, int* argc,
                                                     char** argv);

}  // namespace din
