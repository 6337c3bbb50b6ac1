// The key files of a job's ZeroMQ CURVE security (config `security { curve: true }`).
//
// One server key pair and one client key pair per job, in security.key_dir:
//   server.key          the servers' public key          (read by servers and workers)
//   server.key_secret   the servers' secret key          (read by servers)
//   client.key          the workers' public key          (read by servers: the only key
//                                                          their ZAP handler accepts)
//   client.key_secret   the workers' secret key          (read by workers)
// Each file holds one key as Z85 text (40 characters, a trailing newline allowed) and
// must be a regular file that neither group nor others may access (mode 0600 or 0400),
// so a key directory copied with a careless umask is refused rather than trusted.
// `din_keys DIR` (tools/din_keys.cc) creates them; launch/din_security.py runs it per job.
//
// Every loader fails with a Status naming the file and what is wrong with it.
#pragma once

#include <string>

#include "common/proto/config.pb.h"
#include "common/status.h"

namespace din {

inline constexpr char kServerPublicKeyFile[] = "server.key";
inline constexpr char kServerSecretKeyFile[] = "server.key_secret";
inline constexpr char kClientPublicKeyFile[] = "client.key";
inline constexpr char kClientSecretKeyFile[] = "client.key_secret";

// Length of a CURVE key as Z85 text.
inline constexpr size_t kZ85KeyLength = 40;

// Both halves as Z85 text.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

// What a server needs: its key pair and the one client public key it admits.
struct ServerCurveKeys {
  CurveKeyPair server;
  std::string client_public_key;
};

// What a worker needs: its key pair and the servers' public key.
struct ClientCurveKeys {
  CurveKeyPair client;
  std::string server_public_key;
};

// True when the linked libzmq was built with CURVE (libsodium).
bool CurveAvailable();

// A fresh key pair (zmq_curve_keypair).
Result<CurveKeyPair> NewCurveKeyPair();

// Reads one key file: checks that it is a regular file, its mode (no group/other
// access) and its content (one Z85 key). Returns the key as Z85 text.
Result<std::string> ReadCurveKeyFile(const std::string& path);

// Loads and cross-checks (the secret key must match the public key file) the files of
// security.key_dir a server needs. Fails when curve is on and key_dir is empty, when
// CURVE is unavailable, or when a file is missing, unreadable, malformed or too open.
Result<ServerCurveKeys> LoadServerCurveKeys(const config::SecurityConfig& security);
// The same for a worker.
Result<ClientCurveKeys> LoadClientCurveKeys(const config::SecurityConfig& security);

// Creates `dir` (mode 0700; an existing directory is accepted only when group and
// others have no access to it) and writes a new server and client key pair into it,
// each file created exclusively (O_EXCL) with mode 0600: an existing key file is never
// overwritten.
Status CreateCurveKeyFiles(const std::string& dir);

}  // namespace din
