// The workers' group operations the trainer needs: the dense-gradient all-reduce, a
// barrier, and gathering evaluation predictions to worker 0. MpiCollective runs them over
// the workers' MPI communicator; SoloCollective is the one-worker case without MPI (used
// by in-process tests).
//
// Every call is collective: all workers make the same calls in the same order. Calls
// block until the operation completed; MpiCollective sleeps while waiting instead of
// spinning a core (the servers share the cores on small machines).
//
// Thread safety: one thread (the one that initialised MPI) makes every call.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <span>
#include <vector>

#include "common/status.h"

namespace din {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Element-wise sum over all workers, in place; every worker gets the result.
  virtual Status AllReduceSum(std::span<float> data) = 0;
  virtual Status AllReduceSum(std::span<double> data) = 0;
  virtual Status Barrier() = 0;
  // Concatenates every worker's bytes in rank order into *all on worker 0 (left empty
  // elsewhere). At most 2 GiB per worker.
  virtual Status GatherToRoot(std::span<const std::byte> local, std::vector<std::byte>* all) = 0;
  // Worker 0's *data replaces every other worker's. At most 2 GiB.
  virtual Status Broadcast(std::string* data) = 0;
};

class SoloCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status AllReduceSum(std::span<float>) override { return Status::Ok(); }
  Status AllReduceSum(std::span<double>) override { return Status::Ok(); }
  Status Barrier() override { return Status::Ok(); }
  Status GatherToRoot(std::span<const std::byte> local, std::vector<std::byte>* all) override {
    all->assign(local.begin(), local.end());
    return Status::Ok();
  }
  Status Broadcast(std::string*) override { return Status::Ok(); }
};

// Over `comm` (Cluster::role_comm() of a worker), which it does not own.
class MpiCollective final : public Collective {
 public:
  explicit MpiCollective(MPI_Comm comm);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Status AllReduceSum(std::span<float> data) override;
  Status AllReduceSum(std::span<double> data) override;
  Status Barrier() override;
  Status GatherToRoot(std::span<const std::byte> local, std::vector<std::byte>* all) override;
  Status Broadcast(std::string* data) override;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace din
