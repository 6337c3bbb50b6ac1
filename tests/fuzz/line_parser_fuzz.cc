// Fuzzes LineParser on arbitrary lines in three layouts (data_fuzz_util.h).
//
// Input: layout byte, max_history byte, then text; each '\n'-separated line is appended
// to one batch. Invariants: a refused line leaves the batch exactly as it was; an
// accepted one adds one well-formed sample (labels 0/1, one ID per candidate, aligned
// behaviour lists no longer than max_history); in the numeric din-tsv layouts, the
// sample written back as din-tsv text parses to the same sample.
#include <cstdint>
#include <string>
#include <string_view>

#include <glog/logging.h>

#include "common/data/line_parser.h"
#include "tests/fuzz/data_fuzz_util.h"
#include "tests/fuzz/fuzz_input.h"

namespace din::fuzz {
namespace {

// Sample r of a din-tsv batch as a din-tsv line.
std::string DinTsvLine(const Batch& b, size_t r) {
  std::string s = b.labels[r] == 1.0f ? "1" : "0";
  auto column = [&s, r](const IdColumn& col) {
    s += '\t';
    AppendJoined(col, r, ',', &s);
  };
  column(b.user_fields[0]);
  for (const auto& col : b.candidate_fields) column(col);
  for (const auto& col : b.behavior_fields) column(col);
  return s;
}

}  // namespace
}  // namespace din::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  using namespace din::fuzz;
  static const Schema* schemas[kNumLayouts] = {
      new Schema(LayoutSchema(0)), new Schema(LayoutSchema(1)), new Schema(LayoutSchema(2))};
  FuzzInput in(data, size);
  const int layout = in.Byte() % kNumLayouts;
  const uint32_t max_history = in.Byte() % 4;
  const std::string_view text = in.Rest();

  const Schema& schema = *schemas[layout];
  const LineParser parser(&schema, max_history);
  Batch batch;
  schema.PrepareBatch(&batch);
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;

    const Batch before = batch;
    const Status st = parser.Append(line, &batch);
    if (!st.ok()) {
      CHECK(st.code() == StatusCode::kInvalidArgument) << st.ToString();
      CHECK(SameBatch(batch, before)) << "a refused line changed the batch: " << st.ToString();
      continue;
    }
    CHECK_EQ(batch.size, before.size + 1);
    CheckBatchShape(batch, max_history);
    if (layout != 1) {
      // Written back and parsed again: the same sample.
      const size_t r = batch.size - 1;
      Batch again;
      schema.PrepareBatch(&again);
      const std::string line2 = DinTsvLine(batch, r);
      const Status st2 = parser.Append(line2, &again);
      CHECK(st2.ok()) << "'" << line2 << "': " << st2.ToString();
      CHECK_EQ(RowText(again, 0), RowText(batch, r)) << line2;
    }
  }
  return 0;
}
