// ZapHandler: the ZeroMQ authentication handler (ZAP, ZeroMQ RFC 27) of one din_ps
// process, used when the job runs with `security { curve: true }`.
//
// libzmq asks the handler bound at inproc://zeromq.zap.01 of a context about every
// connection a CURVE server socket of that context accepts, after the client proved it
// holds the secret key of the public key it presents. The handler admits exactly one
// client public key, the job's (common/net/curve_keys.h), and rejects every other key,
// mechanism and ZAP domain. A rejected peer is logged by address: its first rejection
// at once, later ones at most once a minute per address with a count.
//
// Clients that fail before ZAP is asked (a wrong server key, no CURVE at all) never
// complete the handshake; libzmq drops them without telling the handler.
//
// Thread safety: Start() and the destructor from one thread; the counters may be read
// from any thread. The handler's socket belongs to its own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "common/status.h"

namespace din {

// The ZAP domain the servers' CURVE sockets set (ZMQ_ZAP_DOMAIN).
inline constexpr char kZapDomain[] = "din-ps";

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `ctx` and starts the handler thread. Call it before
  // the first CURVE server socket of `ctx` binds. `client_public_key` is Z85 text.
  // `ctx` must outlive the handler.
  static Result<std::unique_ptr<ZapHandler>> Start(zmq::context_t& ctx,
                                                   const std::string& client_public_key);
  // Stops the thread (it also stops by itself when `ctx` is shut down) and closes the
  // socket.
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }

 private:
  ZapHandler(zmq::socket_t socket, std::string client_public_key);
  void Loop();
  // Answers one request; returns whether it was admitted.
  bool Answer(std::vector<zmq::message_t>& request);
  void LogRejected(const std::string& address, const std::string& why);

  struct PeerLog {
    std::chrono::steady_clock::time_point last;
    uint64_t suppressed = 0;
  };

  zmq::socket_t socket_;
  const std::string client_public_key_;  // Z85
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> rejected_{0};
  std::unordered_map<std::string, PeerLog> peer_logs_;  // handler thread only
};

}  // namespace din
