// Fuzzes the Reader on arbitrary file contents, against a reference made of the
// LineParser alone: split at '\n', skip blank lines, count too-long and refused lines as
// bad. Checked on every input, with bad lines skipped (max_bad_lines large):
//  - file order, one worker: exactly the reference samples, in order, and its bad count;
//  - W workers: together exactly the reference samples and bad lines;
//  - shuffled: two epochs, each a permutation of the reference samples;
//  - SaveState after the first batch, RestoreState in a new reader: the same remaining
//    batches as the original reader.
// Input: layout, max_line_bytes, workers, batch size and shuffle block bytes, then the
// file contents.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <glog/logging.h>

#include "common/data/line_parser.h"
#include "common/data/reader.h"
#include "tests/fuzz/data_fuzz_util.h"
#include "tests/fuzz/fuzz_input.h"

namespace din::fuzz {
namespace {

// The input file, in a directory of its own removed at exit, and a descriptor kept open
// on it: each input replaces its contents in place (no open, no stream per input).
struct InputFile {
  std::string path;
  int fd = -1;
};

const InputFile& Input() {
  static const InputFile* file = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "din_reader_fuzz_XXXXXX").string();
    CHECK(::mkdtemp(tmpl.data()) != nullptr);
    static std::string dir = tmpl;
    std::atexit([] { std::filesystem::remove_all(dir); });
    auto* f = new InputFile{tmpl + "/input.tsv", -1};
    f->fd = ::open(f->path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    PCHECK(f->fd >= 0) << f->path;
    return f;
  }();
  return *file;
}

const std::string& InputPath() { return Input().path; }

void WriteInput(std::string_view text) {
  const int fd = Input().fd;
  PCHECK(::ftruncate(fd, static_cast<off_t>(text.size())) == 0);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n =
        ::pwrite(fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
    PCHECK(n > 0);
    done += static_cast<size_t>(n);
  }
}

struct Reference {
  std::vector<std::string> rows;
  uint64_t bad = 0;
};

Reference Expected(std::string_view text, const config::DataConfig& cfg, const Schema& schema) {
  Reference ref;
  const LineParser parser(&schema, cfg.max_history());
  static Batch batch;  // reused: its buffers keep their capacity
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    const size_t content = !line.empty() && line.back() == '\r' ? line.size() - 1 : line.size();
    if (content > cfg.max_line_bytes()) {
      ++ref.bad;
      continue;
    }
    if (content == 0) continue;  // blank
    schema.PrepareBatch(&batch);
    if (parser.Append(line, &batch).ok()) {
      ref.rows.push_back(RowText(batch, 0));
    } else {
      ++ref.bad;
    }
  }
  return ref;
}

std::unique_ptr<Reader> Open(const config::DataConfig& cfg, int worker, int workers, bool shuffle) {
  auto reader = Reader::Open(cfg, {InputPath(), worker, workers, shuffle});
  CHECK(reader.ok()) << reader.status().ToString();
  return std::move(*reader);
}

// The rest of the epoch, one string per batch.
std::vector<std::string> Batches(Reader* reader, uint32_t batch_size,
                                 std::vector<std::string>* rows = nullptr) {
  std::vector<std::string> out;
  static Batch batch;  // reused: its buffers keep their capacity
  for (;;) {
    auto more = reader->NextBatch(&batch);
    CHECK(more.ok()) << more.status().ToString();
    if (!*more) break;
    CHECK_GE(batch.size, 1u);
    CHECK_LE(batch.size, batch_size);
    CheckBatchShape(batch, 2);
    std::string text;
    for (size_t r = 0; r < batch.size; ++r) {
      std::string row = RowText(batch, r);
      text += row;
      text += '\n';
      if (rows) rows->push_back(std::move(row));
    }
    out.push_back(std::move(text));
  }
  return out;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace
}  // namespace din::fuzz

// The reader logs a warning per malformed line; at thousands of inputs a second that
// logging would be most of the work. Errors and fatal checks are still printed.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  FLAGS_minloglevel = google::GLOG_ERROR;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  using namespace din::fuzz;
  FuzzInput in(data, size);
  const int layout = in.Byte() % 2;
  config::DataConfig cfg = LayoutConfig(layout);
  static constexpr uint32_t kLineBytes[] = {16, 48, 1 << 20};
  cfg.set_max_line_bytes(kLineBytes[in.Byte() % 3]);
  const int workers = 1 + in.Byte() % 3;
  cfg.set_batch_size(1 + in.Byte() % 7);
  const uint32_t shuffle_block = 2 + in.Byte() % 5;
  cfg.set_max_history(2);
  const std::string_view text = in.Rest();
  WriteInput(text);
  if (text.empty()) {
    CHECK(!Reader::Open(cfg, {InputPath(), 0, 1, false}).ok()) << "an empty file was accepted";
    return 0;
  }
  static const Schema kSchemas[] = {LayoutSchema(0), LayoutSchema(1)};
  const Schema& schema = kSchemas[layout];
  const Reference ref = Expected(text, cfg, schema);

  // File order, one worker.
  {
    auto reader = Open(cfg, 0, 1, false);
    std::vector<std::string> rows;
    Batches(reader.get(), cfg.batch_size(), &rows);
    CHECK(rows == ref.rows) << "file-order samples differ from the line parser's";
    CHECK_EQ(reader->bad_lines(), ref.bad);
  }
  // Partitioned over workers.
  if (workers > 1) {
    std::vector<std::string> rows;
    uint64_t bad = 0;
    for (int w = 0; w < workers; ++w) {
      auto reader = Open(cfg, w, workers, false);
      Batches(reader.get(), cfg.batch_size(), &rows);
      bad += reader->bad_lines();
    }
    CHECK(Sorted(rows) == Sorted(ref.rows)) << "workers together read other samples";
    CHECK_EQ(bad, ref.bad);
  }
  // Shuffled epochs, and a position saved after the first batch.
  cfg.set_shuffle_buffer(shuffle_block);
  {
    auto reader = Open(cfg, 0, 1, true);
    for (int epoch = 0; epoch < 2; ++epoch) {
      std::vector<std::string> rows;
      Batches(reader.get(), cfg.batch_size(), &rows);
      CHECK(Sorted(rows) == Sorted(ref.rows)) << "epoch " << epoch << " is no permutation";
      reader->StartNextEpoch();
    }
    Batch batch;
    auto first = reader->NextBatch(&batch);
    CHECK(first.ok());
    const std::string state = reader->SaveState();
    auto restored = Open(cfg, 0, 1, true);
    const Status st = restored->RestoreState(state);
    CHECK(st.ok()) << st.ToString();
    CHECK(Batches(restored.get(), cfg.batch_size()) == Batches(reader.get(), cfg.batch_size()))
        << "a restored reader continues differently";
  }
  return 0;
}
