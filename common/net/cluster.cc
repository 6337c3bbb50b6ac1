#include "common/net/cluster.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

namespace din {
namespace {

// Fixed-size record exchanged by the all-gather.
struct WireRecord {
  int32_t role;
  int32_t pad;
  uint64_t fingerprint;
  char host[64];
  char endpoint[1024];
};

void CopyTruncated(char* dst, size_t size, const std::string& src) {
  std::memset(dst, 0, size);
  std::memcpy(dst, src.data(), std::min(size - 1, src.size()));
}

}  // namespace

std::vector<std::string> SplitEndpoints(const std::string& joined) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= joined.size()) {
    const size_t comma = joined.find(',', start);
    const size_t end = comma == std::string::npos ? joined.size() : comma;
    if (end > start) out.push_back(joined.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string JoinEndpoints(const std::vector<std::string>& endpoints) {
  std::string out;
  for (const auto& e : endpoints) out += (out.empty() ? "" : ",") + e;
  return out;
}

std::vector<int> LaneCounts(const std::vector<PeerInfo>& servers) {
  std::vector<int> lanes;
  for (const auto& s : servers)
    lanes.push_back(static_cast<int>(SplitEndpoints(s.endpoint).size()));
  return lanes;
}

const char* RoleName(Role role) { return role == Role::kServer ? "server" : "worker"; }

Cluster::Cluster(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  }
  // Errors come back as codes; every caller turns them into a Status or Fail().
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size_);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  host_ = host;
}

Cluster::~Cluster() {
  if (role_comm_ != MPI_COMM_NULL) MPI_Comm_free(&role_comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

Status Cluster::Rendezvous(Role role, const std::string& endpoint, uint64_t fingerprint) {
  role_ = role;
  role_known_ = true;
  WireRecord mine{};
  mine.role = static_cast<int32_t>(role);
  mine.fingerprint = fingerprint;
  CopyTruncated(mine.host, sizeof(mine.host), host_);
  if (endpoint.size() >= sizeof(mine.endpoint))
    return Status::InvalidArgument("endpoint too long: " + endpoint);
  CopyTruncated(mine.endpoint, sizeof(mine.endpoint), endpoint);

  std::vector<WireRecord> all(world_size_);
  MPI_Request request;
  if (MPI_Iallgather(&mine, sizeof(WireRecord), MPI_BYTE, all.data(), sizeof(WireRecord), MPI_BYTE,
                     MPI_COMM_WORLD, &request) != MPI_SUCCESS)
    return Status::Unavailable("MPI all-gather of endpoints failed");
  DIN_RETURN_IF_ERROR(WaitPolling(&request));

  servers_.clear();
  workers_.clear();
  for (int r = 0; r < world_size_; ++r) {
    const WireRecord& rec = all[r];
    if (rec.fingerprint != fingerprint) {
      return Status::InvalidArgument(
          "rank " + std::to_string(r) + " (" + std::string(rec.host) +
          ") was started with a different table configuration than rank " +
          std::to_string(world_rank_) + "; all processes must read the same config");
    }
    PeerInfo peer{static_cast<Role>(rec.role), r, 0, rec.host, rec.endpoint};
    auto& list = peer.role == Role::kServer ? servers_ : workers_;
    peer.role_rank = static_cast<int>(list.size());
    if (r == world_rank_) role_rank_ = peer.role_rank;
    list.push_back(std::move(peer));
  }
  if (servers_.empty()) return Status::InvalidArgument("the job has no din_ps server process");
  for (const auto& s : servers_)
    if (SplitEndpoints(s.endpoint).empty())
      return Status::InvalidArgument("server at world rank " + std::to_string(s.world_rank) +
                                     " published no endpoint");
  if (workers_.empty()) return Status::InvalidArgument("the job has no worker process");
  if (MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(role), world_rank_, &role_comm_) !=
      MPI_SUCCESS)
    return Status::Unavailable("MPI_Comm_split by role failed");
  MPI_Comm_set_errhandler(role_comm_, MPI_ERRORS_RETURN);
  return Status::Ok();
}

Status Cluster::WaitPolling(MPI_Request* request) {
  auto sleep = std::chrono::microseconds(50);
  for (;;) {
    int done = 0;
    if (MPI_Test(request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return Status::Unavailable("MPI request failed (a peer process may have died)");
    if (done) return Status::Ok();
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::microseconds(20000));
  }
}

namespace {
Status PollingBarrier(MPI_Comm comm) {
  MPI_Request request;
  if (MPI_Ibarrier(comm, &request) != MPI_SUCCESS) return Status::Unavailable("MPI barrier failed");
  return Cluster::WaitPolling(&request);
}
}  // namespace

Status Cluster::Barrier() { return PollingBarrier(MPI_COMM_WORLD); }

Status Cluster::RoleBarrier() { return PollingBarrier(role_comm_); }

void Cluster::Fail(const Status& status) const {
  // Before the rendezvous the role is not known yet: the program names the process.
  if (!role_known_)
    LOG(ERROR) << google::ProgramInvocationShortName() << " (world rank " << world_rank_ << " on "
               << host_ << ") failed: " << status.ToString();
  else
    LOG(ERROR) << RoleName(role_) << " " << role_rank_ << " (world rank " << world_rank_ << " on "
               << host_ << ") failed: " << status.ToString();
  google::FlushLogFiles(google::GLOG_INFO);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace din
