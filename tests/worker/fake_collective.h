// A Collective for one-process tests that plays worker `rank` of `size`: the other
// workers' contributions are given by the test.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "worker/collective.h"

namespace din::test {

class FakeCollective final : public Collective {
 public:
  FakeCollective(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Adds `others` (the other workers' floats, summed), when given.
  Status AllReduceSum(std::span<float> data) override {
    ++float_reduces;
    if (!fail.ok()) return fail;
    if (others.empty()) return Status::Ok();
    if (others.size() != data.size()) return Status::Internal("unexpected all-reduce size");
    for (size_t i = 0; i < data.size(); ++i) data[i] += others[i];
    return Status::Ok();
  }
  Status AllReduceSum(std::span<double>) override { return fail; }
  Status Barrier() override {
    ++barriers;
    return fail;
  }
  // Worker 0 gets its own bytes followed by `other_bytes`; the others get nothing.
  Status GatherToRoot(std::span<const std::byte> local, std::vector<std::byte>* all) override {
    all->clear();
    if (!fail.ok()) return fail;
    if (rank_ != 0) return Status::Ok();
    all->assign(local.begin(), local.end());
    all->insert(all->end(), other_bytes.begin(), other_bytes.end());
    return Status::Ok();
  }
  // Worker 0 keeps its string; the others get `broadcast`.
  Status Broadcast(std::string* data) override {
    if (rank_ != 0) *data = broadcast;
    return fail;
  }

  std::vector<float> others;
  std::vector<std::byte> other_bytes;
  std::string broadcast;
  Status fail = Status::Ok();
  int barriers = 0;
  int float_reduces = 0;

 private:
  int rank_, size_;
};

}  // namespace din::test
