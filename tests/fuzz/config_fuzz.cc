// Fuzzes config loading: arbitrary text through ParseConfig (text-format parsing plus
// ValidateConfig). For every accepted config: printing it and parsing the print gives
// the same config and fingerprint (validation is idempotent), the data section's
// verdict (ValidateDataConfig) agrees with Schema::FromConfig, and the shard placement
// over two servers puts every shard on a lane that exists.
#include <cstdint>
#include <string>

#include <glog/logging.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include "common/config.h"
#include "common/data/reader.h"
#include "common/data/schema.h"
#include "common/placement.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace din;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = ParseConfig(text, "fuzz.pbtxt");
  if (!cfg.ok()) {
    CHECK(!cfg.status().message().empty());
    return 0;
  }
  std::string printed;
  CHECK(google::protobuf::TextFormat::PrintToString(*cfg, &printed));
  auto again = ParseConfig(printed, "printed.pbtxt");
  CHECK(again.ok()) << "a validated config, printed, is refused: " << again.status().ToString()
                    << "\n"
                    << printed;
  google::protobuf::util::DefaultFieldComparator floats;
  floats.set_treat_nan_as_equal(true);  // ValidateConfig lets some NaN fields through
  google::protobuf::util::MessageDifferencer differ;
  differ.set_field_comparator(&floats);
  CHECK(differ.Compare(*cfg, *again)) << "validating twice changes the config:\n" << printed;
  CHECK_EQ(TablesFingerprint(*cfg), TablesFingerprint(*again));
  for (int t = 0; t < cfg->tables_size(); ++t) CHECK_EQ(FindTable(*cfg, cfg->tables(t).name()), t);

  if (ValidateDataConfig(cfg->data()).ok()) CHECK(Schema::FromConfig(cfg->data()).ok());

  const Placement placement(*cfg, {1, 3});
  for (int t = 0; t < cfg->tables_size(); ++t) {
    CHECK_EQ(placement.shards(t), cfg->tables(t).shards());
    for (uint32_t s = 0; s < placement.shards(t); s += 1 + s / 64) {
      const uint32_t g = placement.GlobalShard(t, s);
      CHECK_LT(placement.DestOf(g), placement.num_dests());
      CHECK_LT(placement.LaneOf(g), placement.lanes(placement.ServerOf(g)));
    }
  }
  return 0;
}
