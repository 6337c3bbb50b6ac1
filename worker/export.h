// A model export others can load without this codebase (din_worker --mode=export,
// launch/din-train --export): from a checkpoint, OUT/ gets
//   model.json               the architecture: layers (sizes, activation, tensor files),
//                            pooling, Dice settings, the top input's column layout, the
//                            fields and the tables they read, max_history, the data
//                            layout; "math" spells out the forward pass
//   dense/NAME.npy           one float32 array per dense tensor (att.0.w [in, out],
//                            att.0.b [out], att.0.alpha [out], top.*), and per Dice
//                            layer its running mean and variance (NAME.running_mean,
//                            NAME.running_var [out]): the mean over the checkpoint's
//                            workers, what evaluation and prediction use
//   embeddings/              the tables as a dump (docs/design.md §12): MANIFEST,
//                            _SUCCESS, TABLE/part-*.ids.npy and .emb.npy (float32)
// tools/din_score.py scores din-tsv with it (numpy only) and documents the math.
//
// Thread safety: none; one thread per worker calls ExportModel, all workers together.
#pragma once

#include <string>

#include "common/json.h"
#include "common/proto/config.pb.h"
#include "common/status.h"
#include "worker/collective.h"
#include "worker/model/model_layout.h"
#include "worker/ps_client.h"

namespace din {

// model.json for `layout` under `cfg`, of the checkpoint at `step` in `checkpoint`.
Result<Json> ModelJson(const config::TrainConfig& cfg, const model::ModelLayout& layout,
                       const std::string& checkpoint, uint64_t step);

// Writes `params` and `running` (a backend's, under `layout`) as dir/NAME.npy files.
Status WriteDenseNpy(const model::ModelLayout& layout, std::span<const float> params,
                     std::span<const float> running, const std::string& dir);

// Writes root/model.json and root/dense/ from the dense state of `checkpoint` (written by
// `workers` workers at `step`) under `cfg`; returns the number of dense parameters.
// What ExportModel and `din_dump export` share; the embeddings are theirs to write.
Result<uint64_t> WriteDenseExport(const config::TrainConfig& cfg, const std::string& checkpoint,
                                  int workers, uint64_t step, const std::string& root);

// Loads the checkpoint trainer.resume_from designates into the servers and writes the
// export into `out` (created). Collective; returns worker 0's figures (an empty object
// on the others).
Result<Json> ExportModel(const config::TrainConfig& cfg, PsClient& client, Collective& collective,
                         const std::string& out);

}  // namespace din
