// Reporting (worker/report.h): number formatting, percentiles, the dense checksum, the
// summary JSON line, the metrics-file lines, the progress line and bar, and the progress
// meter's windows, ETA and running AUC.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/proto/wire.pb.h"
#include "tests/testing/config.h"
#include "worker/report.h"

namespace din {
namespace {

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(ReportTest, FormatNumberPrintsNonFiniteAsNull) {
  EXPECT_EQ(FormatNumber(0.5), "0.500000");
  EXPECT_EQ(FormatNumber(2.0 / 3, "%.3f"), "0.667");
  EXPECT_EQ(FormatNumber(NAN), "null");
  EXPECT_EQ(FormatNumber(INFINITY, "%.1f"), "null");
  EXPECT_EQ(FormatNumber(-INFINITY), "null");
}

TEST(ReportTest, PercentileIsTheElementOfRankFloorQN) {
  EXPECT_EQ(Percentile({}, 0.5), 0.0);
  EXPECT_EQ(Percentile({7}, 0.99), 7.0);
  EXPECT_EQ(Percentile({5, 1, 4, 2, 3}, 0.0), 1.0);
  EXPECT_EQ(Percentile({5, 1, 4, 2, 3}, 0.5), 3.0);
  EXPECT_EQ(Percentile({5, 1, 4, 2, 3}, 0.99), 5.0);
  EXPECT_EQ(Percentile({5, 1, 4, 2, 3}, 1.0), 5.0) << "clamped to the last element";
  std::vector<double> v(100);
  std::iota(v.begin(), v.end(), 1.0);
  std::shuffle(v.begin(), v.end(), std::mt19937(7));
  EXPECT_EQ(Percentile(v, 0.5), 51.0);
  EXPECT_EQ(Percentile(v, 0.99), 100.0);
  EXPECT_EQ(Percentile(v, 0.9), 91.0);
}

TEST(ReportTest, LatencyPercentilesFillTheSummary) {
  Latencies l;
  for (int i = 1; i <= 100; ++i) {
    l.pull_ms.push_back(i);
    l.push_ms.push_back(1000 + i);
    l.allreduce_ms.push_back(2000 + i);
    l.step_ms.push_back(3000 + i);
  }
  TrainSummary s;
  SetLatencyPercentiles(l, &s);
  EXPECT_EQ(s.pull_ms_p50, 51);
  EXPECT_EQ(s.pull_ms_p99, 100);
  EXPECT_EQ(s.push_ms_p50, 1051);
  EXPECT_EQ(s.push_ms_p99, 1100);
  EXPECT_EQ(s.allreduce_ms_p50, 2051);
  EXPECT_EQ(s.step_ms_p50, 3051);
  EXPECT_EQ(Latencies::Last(l.push_ms), 1100);
  EXPECT_EQ(Latencies::Last({}), 0);
}

TEST(ReportTest, DenseChecksumSeesEveryBitAndTheBoundary) {
  std::vector<float> params = {0.25f, -1.5f, 3.0f}, running = {0.5f, 2.0f};
  const uint64_t h = DenseChecksum(params, running);
  EXPECT_EQ(DenseChecksum(params, running), h) << "deterministic";
  auto flipped = params;
  flipped[1] = std::nextafter(flipped[1], 0.0f);
  EXPECT_NE(DenseChecksum(flipped, running), h) << "one ulp of a parameter";
  auto running2 = running;
  running2[0] = -running2[0];
  EXPECT_NE(DenseChecksum(params, running2), h) << "a Dice statistic";
  EXPECT_NE(DenseChecksum(running, params), h) << "parameters and statistics swapped";
  // The same floats split differently between the two arrays.
  std::vector<float> p2 = {0.25f, -1.5f}, r2 = {3.0f, 0.5f, 2.0f};
  EXPECT_NE(DenseChecksum(p2, r2), h);
}

config::TrainConfig SummaryConfig() {
  config::TrainConfig cfg;
  cfg.mutable_model()->set_pooling(config::ModelConfig::MEAN);
  cfg.mutable_trainer()->set_staleness(1);
  cfg.mutable_trainer()->set_mba_mode(config::TrainerConfig::ONLINE);
  cfg.mutable_data()->set_batch_size(256);
  return cfg;
}

TEST(ReportTest, SummaryJsonHoldsTheRunsFigures) {
  TrainSummary s;
  s.train_rows = 1000;
  s.samples_trained = 5000;
  s.run_samples_trained = 5000;
  s.epochs = 5;
  s.steps = 20;
  s.train_seconds = 2.0;
  s.prepass_seconds = 0.125;
  s.eval_seconds = 1.5;
  s.final_train_loss = 0.4375;
  s.has_test = true;
  s.test.auc = 0.75;
  s.test.gauc = 0.625;
  s.test.logloss = 0.5;
  s.test.samples = 400;
  s.test.gauc_users = 33;
  s.pull_ms_p50 = 1.25;
  s.pull_ms_p99 = 9.5;
  s.push_ms_p50 = 2.5;
  s.push_ms_p99 = 10.75;
  s.allreduce_ms_p50 = 0.5;
  s.step_ms_p50 = 4.2504;  // rounded to 3 decimals
  s.bad_lines = 2;
  s.dense_checksum = 0xabc;
  s.backend = "cpu";
  s.checkpoints = 3;
  s.checkpoint_seconds = 0.75;
  ServerFigures servers;
  servers.rows = 17;
  servers.skipped_keys = 3;
  const std::string line =
      SummaryJson(s, servers, SummaryConfig(), 4, 2,
                  "{\"test_auc\": 0.8125, \"test_logloss\": 0.40625, \"other\": 1}");
  EXPECT_FALSE(Contains(line, "\n"));
  const Json j = Json::parse(line);
  const Json want = {{"train_rows", 1000},
                     {"epochs", 5},
                     {"steps", 20},
                     {"samples_trained", 5000},
                     {"train_seconds", 2.0},
                     {"train_samples_per_s", 2500.0},
                     {"prepass_seconds", 0.125},
                     {"eval_seconds", 1.5},
                     {"final_train_loss", 0.4375},
                     {"test_auc", 0.75},
                     {"test_gauc", 0.625},
                     {"test_logloss", 0.5},
                     {"test_rows", 400},
                     {"gauc_users", 33},
                     {"bayes_test_auc", 0.8125},
                     {"bayes_test_logloss", 0.40625},
                     {"pull_ms_p50", 1.25},
                     {"pull_ms_p99", 9.5},
                     {"push_ms_p50", 2.5},
                     {"push_ms_p99", 10.75},
                     {"allreduce_ms_p50", 0.5},
                     {"step_ms_p50", 4.25},
                     {"bad_lines", 2},
                     {"server_rows", 17},
                     {"skipped_keys", 3},
                     {"checkpoints", 3},
                     {"checkpoint_seconds", 0.75},
                     {"workers", 4},
                     {"servers", 2},
                     {"backend", "cpu"},
                     {"pooling", "MEAN"},
                     {"staleness", 1},
                     {"mba_mode", "ONLINE"},
                     {"sparse_step", "SYNC"},
                     {"batch_size", 256},
                     {"dense_checksum", "0000000000000abc"}};
  // The same keys, in this order, with these values: only what bayes.json has, only
  // what the run did (no checkpoint path, no resume, no dump).
  EXPECT_EQ(j, want) << line;
}

TEST(ReportTest, SummaryJsonTableFigures) {
  config::TrainConfig cfg = SummaryConfig();
  cfg.add_tables()->set_name("user");
  cfg.add_tables()->set_name("item");
  ServerFigures f;
  f.rows = 30;
  f.skipped_keys = 4;
  f.tables = {{10, 10, 5, 7, 0, 3}, {20, 25, 0, 0, 4, 0}};
  const std::string j = SummaryJson(TrainSummary(), f, cfg, 1, 1, "");
  EXPECT_TRUE(Contains(j,
                       ",\"tables\":{\"user\":{\"rows\":10,\"admitted_ids\":10,"
                       "\"rejected_ids\":5,\"rejected_keys\":7,\"skipped_keys\":0,"
                       "\"evicted_rows\":3},\"item\":{\"rows\":20,\"admitted_ids\":25,"
                       "\"rejected_ids\":0,\"rejected_keys\":0,\"skipped_keys\":4,"
                       "\"evicted_rows\":0}},"))
      << j;
  // Figures that do not match the config's tables are left out.
  f.tables.pop_back();
  EXPECT_FALSE(Contains(SummaryJson(TrainSummary(), f, cfg, 1, 1, ""), "\"tables\"")) << j;
}

TEST(ReportTest, SummaryJsonOptionalParts) {
  TrainSummary s;
  s.final_train_loss = NAN;  // no sample trained
  s.last_checkpoint = "/ck/ckpt-000000000040";
  s.resumed_from = "/ck/ckpt-000000000020";
  s.resumed_step = 20;
  s.dump_dir = "/out/dump";
  s.dump_seconds = 3.5;
  const Json j = Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, ""));
  for (const char* key : {"final_train_loss", "test_auc", "test_gauc", "test_logloss"})
    EXPECT_TRUE(j.at(key).is_null()) << key;
  EXPECT_EQ(j.at("test_rows"), 0);
  EXPECT_EQ(j.at("server_rows"), 0);
  EXPECT_EQ(j.at("skipped_keys"), 0);
  EXPECT_EQ(j.at("last_checkpoint"), "/ck/ckpt-000000000040");
  EXPECT_EQ(j.at("resumed_from"), "/ck/ckpt-000000000020");
  EXPECT_EQ(j.at("resumed_step"), 20);
  EXPECT_EQ(j.at("dump_dir"), "/out/dump");
  EXPECT_EQ(j.at("dump_seconds"), 3.5);
  EXPECT_FALSE(j.contains("bayes_test_auc"));
  // Not JSON, or not an object: no ceiling, no failure.
  for (const char* bad : {"{\"test_auc\": ", "[0.5]", "{\"test_auc\": \"0.5\"}"}) {
    const Json k = Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, bad));
    EXPECT_FALSE(k.contains("bayes_test_auc")) << bad;
  }
}

TEST(ReportTest, SummaryJsonPathsRoundTrip) {
  TrainSummary s;
  const std::string odd = "/tmp/a \"quoted\" dir\\with\\backslashes\t/and\nnewline";
  s.last_checkpoint = odd + "/ckpt-000000000040";
  s.resumed_from = odd + "/ckpt-000000000020";
  s.dump_dir = odd;
  s.backend = "cpu\"";
  const std::string line = SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, "");
  EXPECT_FALSE(Contains(line, "\n")) << "one line";
  const Json j = Json::parse(line);
  EXPECT_EQ(j.at("last_checkpoint").get<std::string>(), odd + "/ckpt-000000000040");
  EXPECT_EQ(j.at("resumed_from").get<std::string>(), odd + "/ckpt-000000000020");
  EXPECT_EQ(j.at("dump_dir").get<std::string>(), odd);
  EXPECT_EQ(j.at("backend").get<std::string>(), "cpu\"");
  // Bytes that are not UTF-8 do not make the line fail.
  s.dump_dir = std::string("/tmp/\xff\xfe");
  EXPECT_TRUE(Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, ""))
                  .at("dump_dir")
                  .is_string());
}

TEST(ReportTest, SummaryRatesCoverOnlyThisRunsWork) {
  // A run resumed from step 20 (5000 samples before it) that trains 1000 more in 2 s.
  TrainSummary s;
  s.samples_trained = 6000;
  s.run_samples_trained = 1000;
  s.train_seconds = 2.0;
  s.resumed_from = "/ck/ckpt-000000000020";
  Json j = Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, ""));
  EXPECT_EQ(j.at("train_samples_per_s"), 500.0);
  EXPECT_EQ(j.at("samples_trained"), 6000);
  // Resumed at the end: nothing trained in a few microseconds is no rate at all.
  s.samples_trained = 5000;
  s.run_samples_trained = 0;
  s.train_seconds = 3e-6;
  SetLatencyPercentiles(Latencies{}, &s);
  j = Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, ""));
  EXPECT_TRUE(j.at("train_samples_per_s").is_null()) << j.dump();
  for (const char* key : {"pull_ms_p50", "pull_ms_p99", "push_ms_p50", "push_ms_p99",
                          "allreduce_ms_p50", "step_ms_p50"})
    EXPECT_TRUE(j.at(key).is_null()) << key << " of no request: " << j.dump();
  s.run_samples_trained = 10;  // samples but no time measured
  s.train_seconds = 0;
  j = Json::parse(SummaryJson(s, ServerFigures{}, SummaryConfig(), 1, 1, ""));
  EXPECT_TRUE(j.at("train_samples_per_s").is_null());
}

TEST(ReportTest, JsonNumbersAndRates) {
  EXPECT_EQ(JsonNumber(2.0 / 3, 3), 0.667);
  EXPECT_EQ(JsonNumber(0.5), 0.5);
  EXPECT_TRUE(JsonNumber(NAN).is_null());
  EXPECT_TRUE(JsonNumber(INFINITY, 1).is_null());
  EXPECT_EQ(JsonNumber(1e300, 3), 1e300);
  EXPECT_EQ(JsonRate(10, 4), 2.5);
  EXPECT_TRUE(JsonRate(0, 4).is_null());
  EXPECT_TRUE(JsonRate(10, 0).is_null());
  EXPECT_TRUE(JsonRate(10, NAN).is_null());
}

TEST(ReportTest, MetricsLines) {
  StepFigures f;
  f.step = 3;
  f.epoch = 1;
  f.samples_trained = 96;
  f.loss = 0.5;
  f.samples_per_s = 1234.56;
  f.step_ms = 1.5;
  f.pull_ms = 0.25;
  f.push_ms = 0.125;
  f.allreduce_ms = 2.25;
  EXPECT_EQ(StepMetricsJson(f),
            "{\"step\":3,\"epoch\":1,\"samples\":96,\"loss\":0.5,\"samples_per_s\":1234.6,"
            "\"step_ms\":1.5,\"pull_ms\":0.25,\"push_ms\":0.125,\"allreduce_ms\":2.25}");
  f.loss = NAN;
  EXPECT_TRUE(Json::parse(StepMetricsJson(f)).at("loss").is_null());
  // Admission and eviction figures per table, when there are any.
  f.loss = 0.5;
  f.tables = {{"item", 7, 3, 0}, {"user", 0, 0, 12}};
  EXPECT_EQ(StepMetricsJson(f),
            "{\"step\":3,\"epoch\":1,\"samples\":96,\"loss\":0.5,\"samples_per_s\":1234.6,"
            "\"step_ms\":1.5,\"pull_ms\":0.25,\"push_ms\":0.125,\"allreduce_ms\":2.25,"
            "\"tables\":{\"item\":{\"admitted\":7,\"rejected\":3,\"evicted\":0},"
            "\"user\":{\"admitted\":0,\"rejected\":0,\"evicted\":12}}}");

  EvalMetrics m;
  m.auc = 0.75;
  m.gauc = NAN;
  m.logloss = 0.25;
  m.samples = 4;
  EXPECT_EQ(EvalMetricsJson("final", 10, 2, m),
            "{\"eval\":\"final\",\"step\":10,\"epoch\":2,\"test_auc\":0.75,\"test_gauc\":null,"
            "\"test_logloss\":0.25,\"test_rows\":4}");
}

TEST(ReportTest, EvalLineWithTrainMetrics) {
  EvalMetrics test, train;
  test.auc = 0.75;
  test.samples = 4;
  train.auc = 0.5;
  train.gauc = 0.625;
  train.samples = 9;
  const Json j = Json::parse(EvalMetricsJson("step", 10, 1, test, &train));
  EXPECT_EQ(j.at("test_auc"), 0.75);
  EXPECT_EQ(j.at("train_auc"), 0.5);
  EXPECT_EQ(j.at("train_gauc"), 0.625);
  EXPECT_EQ(j.at("train_rows"), 9);
  EXPECT_FALSE(Json::parse(EvalMetricsJson("step", 10, 1, test)).contains("train_auc"));
}

TEST(ReportTest, ProgressMeterRecentMetricsGroupByUser) {
  ProgressMeter m(false, 10);
  // User 1: ordered (AUC 1); user 2: reversed (AUC 0); pooled, 3 of 4 pairs ordered.
  const std::vector<float> labels = {1, 0, 1, 0}, logits = {2, -2, -1, 1};
  const std::vector<uint64_t> users = {1, 1, 2, 2};
  m.AddPredictions(labels, logits, users);
  const EvalMetrics r = m.RecentMetrics();
  EXPECT_EQ(r.samples, 4u);
  EXPECT_DOUBLE_EQ(r.gauc, 0.5) << "the mean of 1 and 0, weighted by 2 samples each";
  EXPECT_DOUBLE_EQ(r.auc, 0.75);
  // Without keys every sample is one user's: GAUC is the AUC.
  ProgressMeter n(false, 10);
  const std::vector<float> l2 = {1, 0, 1, 0}, s2 = {2, -2, 1, 3};
  n.AddPredictions(l2, s2);
  EXPECT_DOUBLE_EQ(n.RecentMetrics().gauc, n.RecentMetrics().auc);
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(ReportTest, MetricsFileWritesAndAppends) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / ("report_test_" + std::to_string(getpid())))
          .string();
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/metrics.jsonl";
  {
    MetricsFile f;
    EXPECT_FALSE(f.is_open());
    f.Write("{\"ignored\":1}");  // not open: nothing
    ASSERT_TRUE(f.Open(path, false).ok());
    EXPECT_TRUE(f.is_open());
    f.Write("{\"a\":1}");
    f.Write("{\"b\":2}");
    f.Flush();
    EXPECT_EQ(Lines(path), (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"}));
  }
  {
    MetricsFile f;  // a resumed run continues the file
    ASSERT_TRUE(f.Open(path, true).ok());
    f.Write("{\"c\":3}");
  }
  EXPECT_EQ(Lines(path), (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}", "{\"c\":3}"}));
  {
    MetricsFile f;  // a fresh run starts it over
    ASSERT_TRUE(f.Open(path, false).ok());
    f.Write("{\"d\":4}");
  }
  EXPECT_EQ(Lines(path), (std::vector<std::string>{"{\"d\":4}"}));
  MetricsFile bad;
  const Status st = bad.Open(dir + "/no/such/dir/m.jsonl", false);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(Contains(st.message(), "cannot create metrics file " + dir + "/no/such/dir"))
      << st.message();
  std::filesystem::remove_all(dir);
}

ProgressLine SampleLine() {
  ProgressLine p;
  p.epoch = 1;
  p.epochs = 2;
  p.step = 40;
  p.samples = 5120;
  p.fraction = 0.25;
  p.samples_per_s = 1000.4;
  p.loss = 0.69314;
  p.train_auc = 0.75;
  p.pull_ms = 1.25;
  p.push_ms = 0.5;
  p.eta_s = 12.2;
  return p;
}

TEST(ReportTest, ProgressLogLine) {
  ProgressLine p = SampleLine();
  EXPECT_EQ(FormatProgressLog(p),
            "epoch 1/2 step 40 samples 5120 (25%)  1000 samples/s  loss 0.6931  train-auc "
            "0.7500  pull 1.25 ms  push 0.50 ms  ETA 12 s");
  p.fraction = NAN;  // the data size is not known yet
  p.eta_s = NAN;
  p.loss = NAN;
  p.train_auc = NAN;
  EXPECT_EQ(FormatProgressLog(p),
            "epoch 1/2 step 40 samples 5120  1000 samples/s  loss null  train-auc null  pull "
            "1.25 ms  push 0.50 ms");
}

TEST(ReportTest, ProgressBar) {
  ProgressLine p = SampleLine();
  p.fraction = 0.5;
  EXPECT_EQ(FormatProgressBar(p), "\r[" + std::string(15, '=') + std::string(15, ' ') +
                                      "]  50% epoch 1/2  1000 samples/s  loss 0.6931  auc "
                                      "0.7500  ETA 12s ");
  p.fraction = 1.0;
  EXPECT_TRUE(Contains(FormatProgressBar(p), "[" + std::string(30, '=') + "] 100% "));
  p.fraction = NAN;
  p.eta_s = NAN;
  p.loss = NAN;
  EXPECT_EQ(FormatProgressBar(p), "\r[" + std::string(30, ' ') +
                                      "]  ?% epoch 1/2  1000 samples/s  loss nan  auc 0.7500  "
                                      "ETA ? ");
}

TEST(ReportTest, ProgressMeterLogsEveryPeriodOverItsWindow) {
  ProgressMeter m(/*bar=*/false, /*log_every_seconds=*/10);
  Latencies l;
  l.pull_ms = {3, 4};
  l.push_ms = {5};
  ProgressLine p;
  m.Start(100);
  m.AddSamples(30, 60);
  m.AddSamples(10, 40);
  EXPECT_FALSE(m.Due(false, 105, 1, 1, 2, 100, 0, 0, l, &p)) << "within the period";
  ASSERT_TRUE(m.Due(false, 110, 1, 1, 2, 100, 0, 0, l, &p));
  EXPECT_EQ(p.epoch, 1u);
  EXPECT_EQ(p.step, 2u);
  EXPECT_EQ(p.samples, 100u);
  EXPECT_DOUBLE_EQ(p.samples_per_s, 10.0);
  EXPECT_DOUBLE_EQ(p.loss, 0.4);
  EXPECT_EQ(p.pull_ms, 4);
  EXPECT_EQ(p.push_ms, 5);
  EXPECT_TRUE(std::isnan(p.fraction)) << "train_rows 0: the data size is not known";
  EXPECT_TRUE(std::isnan(p.eta_s));
  EXPECT_TRUE(std::isnan(p.train_auc)) << "no predictions yet";
  EXPECT_FALSE(m.Due(false, 115, 1, 1, 2, 100, 0, 0, l, &p)) << "a new period started at 110";
  ASSERT_TRUE(m.Due(true, 115, 1, 1, 2, 100, 0, 0, l, &p)) << "forced";
  EXPECT_TRUE(std::isnan(p.loss)) << "the window was emptied";
  EXPECT_EQ(p.samples_per_s, 0);
}

TEST(ReportTest, ProgressMeterExcludesTimeAside) {
  ProgressMeter m(false, 10);
  ProgressLine p;
  m.Start(0);
  m.AddSamples(0, 100);
  m.ExcludeTime(5);  // an evaluation or a checkpoint
  ASSERT_TRUE(m.Due(true, 10, 1, 1, 1, 100, 0, 0, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.samples_per_s, 20.0) << "100 samples in 10 s minus 5 s aside";
}

TEST(ReportTest, ProgressMeterFractionAndEta) {
  ProgressMeter m(false, 10);
  ProgressLine p;
  m.Start(0);
  // 1000 rows x 2 epochs, 500 trained, 10 s since the start of which 5 s evaluating.
  ASSERT_TRUE(m.Due(true, 10, 1, 2, 5, 500, 1000, 5, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.fraction, 0.25);
  EXPECT_DOUBLE_EQ(p.eta_s, 15.0) << "1500 samples left at 100 samples/s";
  ASSERT_TRUE(m.Due(true, 20, 2, 2, 99, 2600, 1000, 0, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.fraction, 1.0) << "clamped";
}

TEST(ReportTest, ProgressBarIsRedrawnEveryQuarterSecondFromTheFirstStep) {
  ProgressMeter m(/*bar=*/true, /*log_every_seconds=*/10);
  ProgressLine p;
  m.Start(50);
  EXPECT_TRUE(m.Due(false, 50.01, 1, 1, 1, 1, 0, 0, Latencies{}, &p)) << "drawn at once";
  EXPECT_FALSE(m.Due(false, 50.1, 1, 1, 2, 2, 0, 0, Latencies{}, &p));
  EXPECT_TRUE(m.Due(false, 50.3, 1, 1, 3, 3, 0, 0, Latencies{}, &p));
}

TEST(ReportTest, ProgressMeterRunningAucOverTheRecentPredictions) {
  ProgressMeter m(false, 10);
  ProgressLine p;
  m.Start(0);
  // Scores are logits: sigmoid keeps their order.
  std::vector<float> labels = {1, 0}, logits = {2, -2};
  m.AddPredictions(labels, logits);
  ASSERT_TRUE(m.Due(true, 1, 1, 1, 1, 2, 0, 0, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.train_auc, 1.0);
  logits = {-3, 3};
  m.AddPredictions(labels, logits);
  ASSERT_TRUE(m.Due(true, 2, 1, 1, 2, 4, 0, 0, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.train_auc, 0.25) << "1 of 4 positive-negative pairs ordered";
  // A full window of well-ordered predictions pushes the 4 above out.
  std::vector<float> l2, s2;
  for (size_t i = 0; i < ProgressMeter::kRecent; ++i) {
    l2.push_back(static_cast<float>(i % 2));
    s2.push_back(i % 2 ? 5.0f : -5.0f);
  }
  m.AddPredictions(l2, s2);
  ASSERT_TRUE(m.Due(true, 3, 1, 1, 3, 4, 0, 0, Latencies{}, &p));
  EXPECT_DOUBLE_EQ(p.train_auc, 1.0);
}

TEST(ReportTest, ShardBalanceAndServerBytes) {
  // Table a: 4 shards of 10, 20, 30, 40 rows (mean 25, population sd sqrt(125)); b: one
  // empty shard. Shards alternate between 2 servers.
  auto cfg = test::MustParse(R"pb(
    tables { name: "a" dim: 2 shards: 4 }
    tables { name: "b" dim: 2 }
  )pb");
  std::vector<wire::ShardStats> stats;
  for (uint32_t s = 0; s < 4; ++s) {
    wire::ShardStats st;
    st.set_table(0);
    st.set_shard(s);
    st.set_rows(10 * (s + 1));
    st.set_bytes(1000 * (s + 1));
    stats.push_back(st);
  }
  wire::ShardStats b;
  b.set_table(1);
  b.set_shard(0);
  b.set_bytes(7);
  stats.push_back(b);
  const ServerFigures f = ServerFiguresOf(
      stats, cfg, 2, [](int t, uint32_t shard) { return static_cast<int>((t * 4 + shard) % 2); });
  EXPECT_EQ(f.rows, 100u);
  ASSERT_EQ(f.balance.size(), 2u);
  EXPECT_EQ(f.balance[0].min, 10u);
  EXPECT_EQ(f.balance[0].max, 40u);
  EXPECT_NEAR(f.balance[0].cv, std::sqrt(125.0) / 25, 1e-12);
  EXPECT_EQ(f.balance[1].cv, 0);
  EXPECT_EQ(f.server_bytes, (std::vector<uint64_t>{1000 + 3000 + 7, 2000 + 4000}));
  const std::string j = SummaryJson(TrainSummary{}, f, SummaryConfig(), 1, 2, "");
  EXPECT_TRUE(Contains(j,
                       ",\"shard_rows\":{\"a\":{\"shards\":4,\"min\":10,\"max\":40,"
                       "\"cv\":0.4472},\"b\":{\"shards\":1,\"min\":0,\"max\":0,"
                       "\"cv\":0.0}},\"server_bytes\":[4007,6000],"))
      << j;
}

}  // namespace
}  // namespace din
