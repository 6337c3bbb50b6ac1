#include "ps/server.h"

#include <cstdlib>

#include <algorithm>
#include <chrono>

#include <glog/logging.h>
#include <zmq_addon.hpp>

#include "common/net/curve_keys.h"
#include "common/net/wire.h"

namespace din {

int DefaultLanes(const config::PsConfig& ps) {
  if (ps.threads() > 0) return static_cast<int>(ps.threads());
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(hw, 1u, 8u));
}

uint64_t MemAvailableBytes(const std::string& meminfo) {
  const std::string key = "MemAvailable:";
  const size_t at = meminfo.find(key);
  if (at == std::string::npos) return 0;
  return std::strtoull(meminfo.c_str() + at + key.size(), nullptr, 10) * 1024;  // kB
}

uint64_t MemoryBudgetBytes(const config::PsConfig& ps, uint64_t available, int local_processes) {
  if (ps.memory_limit_bytes() > 0) return ps.memory_limit_bytes();
  return static_cast<uint64_t>(0.9 * static_cast<double>(available)) /
         static_cast<uint64_t>(std::max(local_processes, 1));
}

Result<std::unique_ptr<PsServer>> PsServer::Create(const config::TrainConfig& cfg, int lanes) {
  std::unique_ptr<PsServer> server(new PsServer(cfg));
  for (const auto& t : cfg.tables())
    server->tables_.emplace_back(t, cfg.trainer().mba_mode() == config::TrainerConfig::ONLINE);
  // Bound so that a request is never larger than max_request_keys of the widest rows.
  uint32_t max_dim = 1;
  for (const auto& t : cfg.tables()) max_dim = std::max(max_dim, t.dim());
  const int64_t max_bytes = static_cast<int64_t>(std::min<uint64_t>(
      cfg.ps().max_request_keys() * (sizeof(uint64_t) + sizeof(float) * max_dim) + (1 << 20),
      INT64_MAX / 2));
  std::string curve_secret_key;  // empty: no CURVE
  if (cfg.security().curve()) {
    DIN_ASSIGN_OR_RETURN(ServerCurveKeys keys, LoadServerCurveKeys(cfg.security()));
    // CURVE encrypts and decrypts in the context's I/O threads, one connection on one
    // thread: one I/O thread per lane keeps the crypto of the lanes in parallel.
    server->ctx_.set(zmq::ctxopt::io_threads, lanes);
    // Bound before any lane so that no connection is ever accepted without asking it.
    DIN_ASSIGN_OR_RETURN(server->zap_, ZapHandler::Start(server->ctx_, keys.client_public_key));
    curve_secret_key = keys.server.secret_key;
  }
  for (int l = 0; l < lanes; ++l) {
    zmq::socket_t sock(server->ctx_, zmq::socket_type::router);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::maxmsgsize, max_bytes);
    sock.set(zmq::sockopt::rcvhwm, 0);
    sock.set(zmq::sockopt::sndhwm, 0);
    if (!curve_secret_key.empty()) {
      sock.set(zmq::sockopt::curve_server, true);
      sock.set(zmq::sockopt::curve_secretkey, curve_secret_key);
      sock.set(zmq::sockopt::zap_domain, kZapDomain);
    }
    const std::string addr = "tcp://" + cfg.ps().interface() + ":*";
    try {
      sock.bind(addr);
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot bind " + addr + ": " + e.what());
    }
    server->endpoints_.push_back(sock.get(zmq::sockopt::last_endpoint));
    server->sockets_.push_back(std::move(sock));
  }
  return server;
}

PsServer::~PsServer() { Stop(); }

void PsServer::Start(const Placement& placement, int rank, uint64_t memory_limit_bytes) {
  CHECK(!running_.exchange(true)) << "PsServer started twice";
  rank_ = rank;
  budget_.limit = memory_limit_bytes;
  placement_ = std::make_unique<Placement>(placement);
  CHECK_EQ(placement_->lanes(rank_), static_cast<int>(sockets_.size()));
  for (size_t l = 0; l < sockets_.size(); ++l) {
    handlers_.push_back(std::make_unique<LaneHandler>(
        tables_, *placement_, rank_, static_cast<int>(l), cfg_.ps().max_request_keys(), &budget_));
  }
  for (size_t l = 0; l < sockets_.size(); ++l)
    threads_.emplace_back([this, l] { LaneLoop(static_cast<int>(l)); });
}

void PsServer::Stop() {
  if (!running_.exchange(false)) return;
  ctx_.shutdown();  // every blocking call of the lanes returns ETERM
  for (auto& t : threads_) t.join();
  threads_.clear();
  sockets_.clear();
}

void PsServer::LaneLoop(int lane) {
  zmq::socket_t& sock = sockets_[lane];
  LaneHandler& handler = *handlers_[lane];
  std::vector<zmq::message_t> frames;
  // The identities of held synchronous pushes, by slot (LaneHandler::Process).
  std::vector<zmq::message_t> held;
  auto send = [&sock](zmq::message_t& identity, std::vector<zmq::message_t>& reply) {
    sock.send(identity, zmq::send_flags::sndmore);
    for (size_t i = 0; i < reply.size(); ++i)
      sock.send(reply[i], i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  };
  // A lane only stops when the context is shut down (ETERM). Anything else that goes
  // wrong with one request is answered or logged, and the lane keeps serving.
  for (;;) {
    try {
      // Idle time: while the handler has work (an index drain) and no request waits,
      // do one bounded step of it; a request arriving meanwhile waits at most one step.
      if (handler.HasIdleWork()) {
        zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(0));
        if ((item.revents & ZMQ_POLLIN) == 0) {
          handler.IdleWork();
          continue;
        }
      }
      frames.clear();
      if (!zmq::recv_multipart(sock, std::back_inserter(frames))) continue;
      if (frames.empty()) continue;
      zmq::message_t identity = std::move(frames.front());
      frames.erase(frames.begin());
      LaneHandler::Outcome out;
      try {
        out = handler.Process(frames);
      } catch (const std::exception& e) {  // e.g. no memory for a reply
        wire::RequestHeader h;
        wire::ReplyHeader rh;
        if (!frames.empty() && DecodeFrame(frames[0], &h)) rh.set_request_id(h.request_id());
        rh.set_version(wire::CURRENT_VERSION);
        rh.set_server_rank(static_cast<uint32_t>(rank_));
        SetReplyStatus(
            Status::Internal(std::string("server failed to handle the request: ") + e.what()), &rh);
        out = LaneHandler::Outcome{};
        out.reply.push_back(EncodeFrame(rh));
      }
      if (out.held_slot >= 0) {
        if (held.size() <= static_cast<size_t>(out.held_slot)) held.resize(out.held_slot + 1);
        held[out.held_slot] = std::move(identity);
      } else {
        send(identity, out.reply);
      }
      for (auto& [slot, reply] : out.released) send(held[slot], reply);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      LOG(ERROR) << "server " << rank_ << " lane " << lane << ": " << e.what();
    }
  }
}

}  // namespace din
