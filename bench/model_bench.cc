// DIN forward+backward throughput on the standard configuration: dim 16 per field,
// item ⊕ category, max_history 50 with history lengths uniform in [1, 50], batch 256,
// attention [80, 40], top [200, 80], Dice. Also measures the machine's fp32 GEMM peak in
// the same run (a large Eigen SGEMM with the same flags and threads, or cuBLAS SGEMM for
// the CUDA backend) and reports the model's counted GEMM FLOP rate as a ratio of it.
//
// The last line of output is one JSON object: backend, threads, batch, samples_per_s,
// ms_per_batch, gflops, peak_gflops, peak_ratio. Defaults: cpu backend, 1 thread, 5 s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "common/json.h"
#include "common/proto/model_config.pb.h"
#include "worker/model/backend.h"
#include "worker/model/cuda_backend.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Sustained Eigen SGEMM rate (GFLOP/s) on square matrices, the CPU's practical peak.
double EigenSgemmPeak(double seconds) {
  const int n = 1536;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  c.noalias() = a * b;  // warm-up
  int reps = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    c.noalias() = a * b;
    ++reps;
    elapsed = Seconds(t0, Clock::now());
  }
  if (c(0, 0) == 12345.0f) std::printf("#\n");  // keep the product alive
  return 2.0 * n * n * n * reps / elapsed / 1e9;
}

// GEMM FLOPs of one forward+backward: every layer does x·W forward and x^T·dS, dS·W^T
// backward (the first layers too: their input gradient feeds the embedding gradients).
// The FLOPs the backends execute, not those of the textbook layers: see AttentionFlops.
double MlpFlops(double rows, int in, const std::vector<int>& outs) {
  double f = 0;
  for (int out : outs) {
    f += 6.0 * rows * in * out;
    in = out;
  }
  return f;
}

// The activation unit as the backends run it (model_math.h, FuseAttentionWeight): the
// first layer's candidate share v_a·(W_a + W_d) once per sample ([batch x d]·[d x h1],
// forward, weight gradient and input gradient), per position only [e, v_a ⊙ e] (2d
// columns, not 4d); the other layers per position as usual.
double AttentionFlops(double positions, double batch, int item_dim,
                      const std::vector<int>& hidden) {
  return MlpFlops(batch, item_dim, {hidden[0]}) + MlpFlops(positions, 2 * item_dim, {hidden[0]}) +
         MlpFlops(positions, hidden[0], std::vector<int>(hidden.begin() + 1, hidden.end()));
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend_kind = "cpu";
  int batch = 256, threads = 1, dim = 16, max_history = 50;
  double seconds = 5.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--backend")
      backend_kind = next();
    else if (a == "--batch")
      batch = std::stoi(next());
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--seconds")
      seconds = std::stod(next());
    else {
      std::fprintf(stderr,
                   "usage: model_bench [--backend cpu|cuda|auto] [--batch N] [--threads N] "
                   "[--seconds S]\n");
      return 2;
    }
  }

  din::config::ModelConfig config;  // defaults: attention [80, 40], top [200, 80], Dice
  config.set_max_history(max_history);
  din::model::FieldDims dims;
  dims.candidate = {dim, dim};
  auto created = din::model::CreateBackend(backend_kind, config, dims, threads);
  if (!created.ok()) {
    std::fprintf(stderr, "model_bench: %s\n", created.status().ToString().c_str());
    return 1;
  }
  auto backend = std::move(created).value();

  // A realistic batch: item and category tables of a few thousand distinct rows each.
  std::mt19937_64 rng(42);
  const uint32_t items = 4000, cates = 300;
  std::vector<float> item_rows(static_cast<size_t>(items) * dim), cate_rows(cates * dim);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (float& v : item_rows) v = normal(rng);
  for (float& v : cate_rows) v = normal(rng);
  din::model::ModelInput input;
  input.batch_size = batch;
  input.tables = {{item_rows.data(), items, dim}, {cate_rows.data(), cates, dim}};
  input.candidate_fields.resize(2);
  input.behavior_fields.resize(2);
  for (int f = 0; f < 2; ++f) {
    input.candidate_fields[f].table = f;
    input.behavior_fields[f].table = f;
  }
  std::vector<float> labels(batch);
  long positions = 0;
  for (int b = 0; b < batch; ++b) {
    const int len = 1 + static_cast<int>(rng() % max_history);
    positions += len;
    for (int f = 0; f < 2; ++f) {
      const uint32_t n = f == 0 ? items : cates;
      input.candidate_fields[f].rows.push_back(rng() % n);
      input.candidate_fields[f].offsets.push_back(b + 1);
      for (int j = 0; j < len; ++j) input.behavior_fields[f].rows.push_back(rng() % n);
      input.behavior_fields[f].offsets.push_back(
          static_cast<uint32_t>(input.behavior_fields[f].rows.size()));
    }
    labels[b] = static_cast<float>(rng() % 2);
  }

  const double flops = AttentionFlops(static_cast<double>(positions), batch, 2 * dim, {80, 40, 1}) +
                       MlpFlops(batch, 3 * 2 * dim, {200, 80, 1});

  for (int i = 0; i < 3; ++i) {  // warm-up
    auto r = backend->TrainStep(input, labels);
    if (!r.ok()) {
      std::fprintf(stderr, "model_bench: %s\n", r.status().ToString().c_str());
      return 1;
    }
  }
  int steps = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    auto r = backend->TrainStep(input, labels);
    if (!r.ok()) return 1;
    ++steps;
    elapsed = Seconds(t0, Clock::now());
  }
  const double per_batch = elapsed / steps;
  const double gflops = flops / per_batch / 1e9;

  double peak = 0;
  if (backend->name() == "cuda") {
    auto p = din::model::CudaSgemmPeakGflops(0);
    if (!p.ok()) {
      std::fprintf(stderr, "model_bench: %s\n", p.status().ToString().c_str());
      return 1;
    }
    peak = *p;
  } else {
    if (threads > 0) Eigen::setNbThreads(threads);
    peak = EigenSgemmPeak(std::min(seconds, 3.0));
  }
  std::printf("# %d steps, %.1f kept positions per batch, %.3f GFLOP per step\n", steps,
              static_cast<double>(positions), flops / 1e9);
  din::Json j;
  j["bench"] = "model_bench";
  j["backend"] = std::string(backend->name());
  j["threads"] = threads;
  j["batch"] = batch;
  j["samples_per_s"] = din::JsonNumber(batch / per_batch, 1);
  j["ms_per_batch"] = din::JsonNumber(per_batch * 1e3, 3);
  j["gflops"] = din::JsonNumber(gflops, 2);
  j["peak_gflops"] = din::JsonNumber(peak, 2);
  j["peak_ratio"] = din::JsonNumber(gflops / peak, 4);
  std::printf("%s\n", din::JsonLine(j).c_str());
  return 0;
}
