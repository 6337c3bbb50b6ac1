#include "ps/zap_handler.h"

#include <glog/logging.h>
#include <zmq_addon.hpp>

namespace din {
namespace {

constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr auto kLogInterval = std::chrono::minutes(1);
// Peers remembered for rate-limited logging; past this the memory starts over (a peer
// may then be logged again sooner).
constexpr size_t kMaxPeerLogs = 4096;

std::string Text(const zmq::message_t& m) { return std::string(m.data<char>(), m.size()); }

}  // namespace

Result<std::unique_ptr<ZapHandler>> ZapHandler::Start(zmq::context_t& ctx,
                                                      const std::string& client_public_key) {
  zmq::socket_t sock(ctx, zmq::socket_type::rep);
  sock.set(zmq::sockopt::linger, 0);
  try {
    sock.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("cannot bind the ZAP handler at ") + kZapEndpoint +
                               ": " + e.what());
  }
  std::unique_ptr<ZapHandler> zap(new ZapHandler(std::move(sock), client_public_key));
  zap->thread_ = std::thread([z = zap.get()] { z->Loop(); });
  return zap;
}

ZapHandler::ZapHandler(zmq::socket_t socket, std::string client_public_key)
    : socket_(std::move(socket)), client_public_key_(std::move(client_public_key)) {}

ZapHandler::~ZapHandler() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::Loop() {
  std::vector<zmq::message_t> request;
  zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
  // The poll timeout bounds how long the destructor waits for the thread.
  while (!stop_.load()) {
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
      request.clear();
      if (!zmq::recv_multipart(socket_, std::back_inserter(request))) continue;
      if (Answer(request)) {
        accepted_.fetch_add(1, std::memory_order_relaxed);
      } else {
        rejected_.fetch_add(1, std::memory_order_relaxed);
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      LOG(ERROR) << "ZAP handler: " << e.what();
    }
  }
}

bool ZapHandler::Answer(std::vector<zmq::message_t>& request) {
  // Request (RFC 27): version, request id, domain, address, routing id, mechanism,
  // credentials... Reply: version, request id, status code, status text, user id,
  // metadata.
  std::string code = "400";
  std::string why;
  std::string address = request.size() > 3 ? Text(request[3]) : "(unknown)";
  if (request.size() < 6 || Text(request[0]) != "1.0") {
    code = "500";
    why = "malformed ZAP request";
  } else if (Text(request[2]) != kZapDomain) {
    why = "ZAP domain '" + Text(request[2]) + "'";
  } else if (Text(request[5]) != "CURVE") {
    why = "mechanism " + Text(request[5]);
  } else if (request.size() < 7 || request[6].size() != 32) {
    why = "no CURVE public key";
  } else {
    char z85[41];
    zmq_z85_encode(z85, request[6].data<uint8_t>(), 32);
    if (client_public_key_ == z85) {
      code = "200";
    } else {
      why = "client public key " + std::string(z85, 8) + "... is not the job's";
    }
  }
  const bool ok = code == "200";
  if (!ok) LogRejected(address, why);

  std::vector<zmq::message_t> reply;
  reply.emplace_back(std::string_view("1.0"));
  if (request.size() > 1) {
    reply.push_back(std::move(request[1]));
  } else {
    reply.emplace_back();
  }
  reply.emplace_back(std::string_view(code));
  reply.emplace_back(std::string_view(ok ? "OK" : "not the job's client key"));
  reply.emplace_back(std::string_view(ok ? "din-worker" : ""));
  reply.emplace_back();
  zmq::send_multipart(socket_, reply);
  return ok;
}

void ZapHandler::LogRejected(const std::string& address, const std::string& why) {
  const auto now = std::chrono::steady_clock::now();
  if (peer_logs_.size() >= kMaxPeerLogs && !peer_logs_.contains(address)) peer_logs_.clear();
  auto [it, first] = peer_logs_.try_emplace(address, PeerLog{now, 0});
  PeerLog& log = it->second;
  if (first) {
    LOG(WARNING) << "refused a PS connection from " << address << ": " << why
                 << " (security.curve; further refusals of this peer are logged at most once "
                    "a minute)";
    return;
  }
  if (now - log.last < kLogInterval) {
    ++log.suppressed;
    return;
  }
  LOG(WARNING) << "refused a PS connection from " << address << ": " << why << " ("
               << log.suppressed + 1 << " refusals since the last message)";
  log.last = now;
  log.suppressed = 0;
}

}  // namespace din
