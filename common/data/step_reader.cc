#include "common/data/step_reader.h"

#include <algorithm>

#include "common/data/partition.h"
#include "common/hash.h"

namespace din {
namespace {

constexpr uint32_t kDefaultMaxPartitions = 64;
// Line buffer of one partition reader: at most kPartitionBufferBytes, and all of a
// worker's together within kPartitionBufferBudget unless that leaves less than
// kMinPartitionBufferBytes each.
constexpr size_t kPartitionBufferBytes = 256u << 10;
constexpr size_t kPartitionBufferBudget = 16u << 20;
constexpr size_t kMinPartitionBufferBytes = 64u << 10;

// The shuffle block of each partition reader; 0 = file order.
uint32_t PartitionShuffle(const config::DataConfig& cfg, uint32_t partitions) {
  if (cfg.shuffle_buffer() <= 1) return 0;
  return std::max<uint32_t>(2, cfg.shuffle_buffer() / partitions);
}

std::string List(const std::vector<uint32_t>& v) {
  std::string s = "{";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "}";
}

}  // namespace

uint32_t StepPartitions(const config::DataConfig& cfg) {
  return cfg.partitions() > 0 ? cfg.partitions()
                              : std::min(kDefaultMaxPartitions, cfg.batch_size());
}

Result<std::unique_ptr<StepReader>> StepReader::Open(const config::DataConfig& cfg, int worker,
                                                     int workers) {
  if (workers < 1 || worker < 0 || worker >= workers)
    return Status::InvalidArgument("step reader: worker " + std::to_string(worker) + " of " +
                                   std::to_string(workers) + " is invalid");
  DIN_RETURN_IF_ERROR(ValidateDataConfig(cfg));
  const uint32_t partitions = StepPartitions(cfg);
  if (static_cast<uint64_t>(workers) > partitions)
    return Status::InvalidArgument(
        "data.partitions: " + std::to_string(partitions) + " partitions" +
        (cfg.partitions() == 0 ? " (automatic: min(64, batch_size))" : "") + " for " +
        std::to_string(workers) +
        " workers; every worker needs at least one: set data.partitions to at least the "
        "worker count (and at most batch_size)");
  if (cfg.train_path().empty()) return Status::InvalidArgument("data: no train_path given");
  DIN_ASSIGN_OR_RETURN(Schema schema, Schema::FromConfig(cfg));
  DIN_ASSIGN_OR_RETURN(std::vector<InputFile> listed, ListInputFiles(cfg.train_path()));
  auto files = std::make_shared<const std::vector<InputFile>>(std::move(listed));

  std::vector<uint32_t> owned;
  for (uint32_t v = static_cast<uint32_t>(worker); v < partitions;
       v += static_cast<uint32_t>(workers))
    owned.push_back(v);
  Reader::PartitionOptions options;
  options.files = files;
  options.parts = static_cast<int>(partitions);
  options.shuffle_buffer = PartitionShuffle(cfg, partitions);
  options.read_buffer_bytes = std::clamp(kPartitionBufferBudget / owned.size(),
                                         kMinPartitionBufferBytes, kPartitionBufferBytes);
  std::vector<std::unique_ptr<Reader>> readers;
  for (uint32_t v : owned) {
    options.part = static_cast<int>(v);
    DIN_ASSIGN_OR_RETURN(std::unique_ptr<Reader> reader, Reader::OpenPartition(cfg, options));
    readers.push_back(std::move(reader));
  }
  return std::unique_ptr<StepReader>(new StepReader(
      cfg, std::move(schema), std::move(files), partitions, std::move(owned), std::move(readers)));
}

StepReader::StepReader(const config::DataConfig& cfg, Schema schema,
                       std::shared_ptr<const std::vector<InputFile>> files, uint32_t partitions,
                       std::vector<uint32_t> owned, std::vector<std::unique_ptr<Reader>> readers)
    : cfg_(cfg),
      schema_(std::move(schema)),
      files_(std::move(files)),
      partitions_(partitions),
      global_batch_(cfg.batch_size()),
      owned_(std::move(owned)),
      readers_(std::move(readers)),
      last_counts_(owned_.size(), 0) {
  for (uint32_t v : owned_) {
    const uint32_t take = global_batch_ / partitions_ + (v < global_batch_ % partitions_ ? 1 : 0);
    take_.push_back(take);
    share_ += take;
  }
}

Result<bool> StepReader::NextStep(Batch* batch) {
  schema_.PrepareBatch(batch);
  for (size_t i = 0; i < readers_.size(); ++i) {
    DIN_ASSIGN_OR_RETURN(size_t n, readers_[i]->NextSamples(batch, take_[i]));
    last_counts_[i] = static_cast<uint32_t>(n);
  }
  return batch->size > 0;
}

void StepReader::StartNextEpoch() {
  ++epoch_;
  for (auto& reader : readers_) reader->StartNextEpoch();
  std::fill(last_counts_.begin(), last_counts_.end(), 0);
}

uint64_t StepReader::bad_lines() const {
  uint64_t n = 0;
  for (const auto& reader : readers_) n += reader->bad_lines();
  return n;
}

std::vector<std::string> StepReader::bad_line_messages() const {
  std::vector<std::string> out;
  for (const auto& reader : readers_)
    out.insert(out.end(), reader->bad_line_messages().begin(), reader->bad_line_messages().end());
  return out;
}

uint64_t StepReader::samples_in_epoch() const {
  uint64_t n = 0;
  for (const auto& reader : readers_) n += reader->samples_in_epoch();
  return n;
}

// Everything the partition streams depend on except the worker count: the input, V,
// the seed and shuffle settings; and this worker's partition set.
uint64_t StepReader::Fingerprint() const {
  uint64_t h = Mix64(0x57e9ead5ULL ^ cfg_.seed());
  for (const auto& f : *files_) h = Mix64(h ^ HashToken(f.path)) + f.size;
  h = Mix64(h ^ partitions_) + PartitionShuffle(cfg_, partitions_);
  h = Mix64(h ^ cfg_.max_line_bytes());
  for (uint32_t v : owned_) h = Mix64(h ^ (v + 1ULL));
  return Mix64(h);
}

std::string StepReader::SaveState() const {
  config::StepReaderState s;
  s.set_fingerprint(Fingerprint());
  s.set_partitions(partitions_);
  for (size_t i = 0; i < owned_.size(); ++i) {
    s.add_partition(owned_[i]);
    s.add_reader(readers_[i]->SaveState());
  }
  return s.SerializeAsString();
}

Status StepReader::RestoreState(std::string_view bytes) {
  config::StepReaderState s;
  if (!s.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return Status::InvalidArgument("step reader state: cannot parse");
  if (s.partitions() != partitions_)
    return Status::InvalidArgument(
        "step reader state: saved with data.partitions = " + std::to_string(s.partitions()) +
        ", this reader has " + std::to_string(partitions_));
  const std::vector<uint32_t> theirs(s.partition().begin(), s.partition().end());
  if (theirs != owned_)
    return Status::InvalidArgument(
        "step reader state: it holds partitions " + List(theirs) + " but this worker reads " +
        List(owned_) + " (a state is restored by the same worker of the same worker count)");
  if (s.reader_size() != s.partition_size())
    return Status::InvalidArgument("step reader state: inconsistent");
  if (s.fingerprint() != Fingerprint())
    return Status::InvalidArgument(
        "step reader state: it belongs to other input files, sizes, seed or shuffle settings");
  for (size_t i = 0; i < readers_.size(); ++i)
    DIN_RETURN_IF_ERROR(readers_[i]
                            ->RestoreState(s.reader(static_cast<int>(i)))
                            .WithContext("partition " + std::to_string(owned_[i])));
  epoch_ = readers_.front()->epoch();
  for (const auto& reader : readers_)
    if (reader->epoch() != epoch_)
      return Status::InvalidArgument("step reader state: partitions in different epochs");
  std::fill(last_counts_.begin(), last_counts_.end(), 0);
  return Status::Ok();
}

}  // namespace din
