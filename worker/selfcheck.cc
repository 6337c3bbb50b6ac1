#include "worker/selfcheck.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/optim/optimizer.h"
#include "common/optim/row_initializer.h"
#include "worker/ps_client.h"

namespace din {
namespace {

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

Status SelfCheck(const config::TrainConfig& cfg, Cluster& cluster, SelfCheckOptions options) {
  DIN_ASSIGN_OR_RETURN(auto client, PsClient::Connect(cfg, cluster.servers()));
  const int w = cluster.role_rank();
  const int n = options.ids;
  double pull_ms = 0, push_ms = 0;
  uint64_t keys_moved = 0;
  for (int t = 0; t < cfg.tables_size(); ++t) {
    const auto& table = cfg.tables(t);
    const uint32_t dim = table.dim();
    // IDs of this worker only (a sparse, large ID space), each listed twice so the
    // client's deduplication is exercised.
    std::vector<uint64_t> ids;
    ids.reserve(2 * static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ids.push_back((uint64_t{1} << 40) * (w + 1) + 7919ull * i);
    for (int i = 0; i < n; ++i) ids.push_back(ids[i]);

    TablePull before;
    PullSpec pull{t, ids, &before};
    auto t0 = std::chrono::steady_clock::now();
    DIN_ASSIGN_OR_RETURN(auto h, client->Pull({&pull, 1}, wire::TRAIN));
    DIN_RETURN_IF_ERROR(client->Wait(h));
    pull_ms += Ms(std::chrono::steady_clock::now() - t0);
    if (before.unique_ids.size() != static_cast<size_t>(n))
      return Status::Internal("dedup returned " + std::to_string(before.unique_ids.size()) +
                              " ids");
    RowInitializer init(table.initializer(), table.seed());
    std::vector<float> expect(dim);
    for (int i = 0; i < n; ++i) {
      init.Fill(before.unique_ids[i], expect.data(), dim);
      for (uint32_t j = 0; j < dim; ++j)
        if (before.values[static_cast<size_t>(i) * dim + j] != expect[j])
          return Status::Internal("table " + table.name() + ": row " +
                                  std::to_string(before.unique_ids[i]) +
                                  " does not hold its initial value");
    }

    auto opt = SparseOptimizer::Create(table.optimizer());
    std::vector<float> model = before.values;
    std::vector<float> state(static_cast<size_t>(n) * opt->StateFloats(dim));
    for (int i = 0; i < n; ++i)
      opt->InitState(state.data() + static_cast<size_t>(i) * opt->StateFloats(dim), dim);
    std::vector<float> grads(static_cast<size_t>(n) * dim);
    for (int r = 0; r < options.rounds; ++r) {
      for (size_t k = 0; k < grads.size(); ++k)
        grads[k] = 0.001f * static_cast<float>((k * 31 + r * 7) % 97) - 0.05f;
      PushSpec push{t, before.unique_ids, grads};
      t0 = std::chrono::steady_clock::now();
      DIN_ASSIGN_OR_RETURN(auto ph, client->Push({&push, 1}));
      DIN_RETURN_IF_ERROR(client->Wait(ph));
      push_ms += Ms(std::chrono::steady_clock::now() - t0);
      for (int i = 0; i < n; ++i)
        opt->Apply(model.data() + static_cast<size_t>(i) * dim,
                   state.data() + static_cast<size_t>(i) * opt->StateFloats(dim),
                   grads.data() + static_cast<size_t>(i) * dim, dim);
      keys_moved += 2ull * n;
    }
    TablePull after;
    PullSpec again{t, before.unique_ids, &after};
    DIN_ASSIGN_OR_RETURN(auto h2, client->Pull({&again, 1}, wire::TRAIN));
    DIN_RETURN_IF_ERROR(client->Wait(h2));
    if (after.values != model)
      return Status::Internal("table " + table.name() + ": rows after " +
                              std::to_string(options.rounds) + " pushes differ from the " +
                              opt->Name() + " reference");

    // Evaluation pulls of unknown IDs read zeros and create nothing.
    std::vector<uint64_t> unknown{(uint64_t{1} << 62) + w, (uint64_t{1} << 62) + 1000 + w};
    TablePull eval;
    PullSpec ep{t, unknown, &eval};
    DIN_ASSIGN_OR_RETURN(auto h3, client->Pull({&ep, 1}, wire::EVAL));
    DIN_RETURN_IF_ERROR(client->Wait(h3));
    for (float v : eval.values)
      if (v != 0.0f) return Status::Internal("evaluation pull of an unknown ID is not zero");
  }
  DIN_ASSIGN_OR_RETURN(auto stats, client->Stats());
  uint64_t rows = 0, bytes = 0;
  for (const auto& s : stats) {
    rows += s.rows();
    bytes += s.bytes();
  }
  if (w == 0) {
    Json j;
    j["mode"] = "selfcheck";
    j["workers"] = cluster.num_workers();
    j["servers"] = cluster.num_servers();
    j["tables"] = cfg.tables_size();
    j["rows"] = rows;
    j["bytes"] = bytes;
    j["pull_ms"] = JsonNumber(pull_ms, 2);
    j["push_ms"] = JsonNumber(push_ms, 2);
    j["keys_moved"] = keys_moved;
    j["ok"] = true;
    std::printf("%s\n", JsonLine(j).c_str());
    std::fflush(stdout);
  }
  return Status::Ok();
}

}  // namespace din
