#include "worker/collective.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <thread>

namespace din {
namespace {

// Waits for a non-blocking MPI request. Open MPI's blocking calls busy-poll a core,
// which starves the servers when processes outnumber cores; this polls with short
// sleeps instead. The sleep stays short (at most 200 us) because the per-step
// all-reduce is on the training critical path.
Status Wait(MPI_Request* request, const char* what) {
  auto sleep = std::chrono::microseconds(5);
  for (int spins = 0;; ++spins) {
    int done = 0;
    if (MPI_Test(request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return Status::Unavailable(std::string("MPI ") + what +
                                 " among the workers failed (a worker process may have died)");
    if (done) return Status::Ok();
    if (spins < 20) {
      std::this_thread::yield();
      continue;
    }
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(200));
  }
}

}  // namespace

MpiCollective::MpiCollective(MPI_Comm comm) : comm_(comm) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

Status MpiCollective::AllReduceSum(std::span<float> data) {
  if (size_ == 1 || data.empty()) return Status::Ok();
  MPI_Request req;
  if (MPI_Iallreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), MPI_FLOAT, MPI_SUM,
                     comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI all-reduce failed to start");
  return Wait(&req, "all-reduce");
}

Status MpiCollective::AllReduceSum(std::span<double> data) {
  if (size_ == 1 || data.empty()) return Status::Ok();
  MPI_Request req;
  if (MPI_Iallreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), MPI_DOUBLE, MPI_SUM,
                     comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI all-reduce failed to start");
  return Wait(&req, "all-reduce");
}

Status MpiCollective::Barrier() {
  if (size_ == 1) return Status::Ok();
  MPI_Request req;
  if (MPI_Ibarrier(comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI barrier failed to start");
  return Wait(&req, "barrier");
}

Status MpiCollective::GatherToRoot(std::span<const std::byte> local, std::vector<std::byte>* all) {
  all->clear();
  if (local.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return Status::ResourceExhausted("more than 2 GiB of predictions on one worker");
  if (size_ == 1) {
    all->assign(local.begin(), local.end());
    return Status::Ok();
  }
  int mine = static_cast<int>(local.size());
  std::vector<int> sizes(rank_ == 0 ? size_ : 0);
  MPI_Request req;
  if (MPI_Igather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI gather failed to start");
  DIN_RETURN_IF_ERROR(Wait(&req, "gather"));
  std::vector<int> displs(sizes.size());
  size_t total = 0;
  for (size_t r = 0; r < sizes.size(); ++r) {
    if (total > static_cast<size_t>(std::numeric_limits<int>::max()))
      return Status::ResourceExhausted("more than 2 GiB of predictions to gather");
    displs[r] = static_cast<int>(total);
    total += static_cast<size_t>(sizes[r]);
  }
  all->resize(total);
  if (MPI_Igatherv(local.data(), mine, MPI_BYTE, all->data(), sizes.data(), displs.data(), MPI_BYTE,
                   0, comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI gather failed to start");
  return Wait(&req, "gather");
}

Status MpiCollective::Broadcast(std::string* data) {
  if (size_ == 1) return Status::Ok();
  if (data->size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    return Status::ResourceExhausted("broadcast of more than 2 GiB");
  int n = static_cast<int>(data->size());
  MPI_Request req;
  if (MPI_Ibcast(&n, 1, MPI_INT, 0, comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI broadcast failed to start");
  DIN_RETURN_IF_ERROR(Wait(&req, "broadcast"));
  data->resize(static_cast<size_t>(n));
  if (n == 0) return Status::Ok();
  if (MPI_Ibcast(data->data(), n, MPI_BYTE, 0, comm_, &req) != MPI_SUCCESS)
    return Status::Unavailable("MPI broadcast failed to start");
  return Wait(&req, "broadcast");
}

}  // namespace din
