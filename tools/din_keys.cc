// din_keys: creates the key files of a job's ZeroMQ CURVE security (common/net/curve_keys.h).
//
//   din_keys DIR
//
// Creates DIR with mode 0700 (an existing DIR must not be accessible by group or others)
// and writes a fresh server and client key pair into it as Z85 text, each file created
// exclusively with mode 0600: server.key, server.key_secret, client.key,
// client.key_secret. It never overwrites a key file. Then run the job with
// `security { curve: true key_dir: "DIR" }` (launch/din_security.py does both).
// Prints DIR's absolute path on success; exits 1 with a message naming the problem.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/net/curve_keys.h"

int main(int argc, char** argv) {
  if (argc != 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fprintf(stderr,
                 "usage: din_keys DIR\n"
                 "creates DIR (mode 0700) with a new CURVE server and client key pair for one "
                 "job:\n  %s %s %s %s (mode 0600)\n",
                 din::kServerPublicKeyFile, din::kServerSecretKeyFile, din::kClientPublicKeyFile,
                 din::kClientSecretKeyFile);
    return argc == 2 ? 0 : 2;
  }
  const std::string dir = argv[1];
  const din::Status st = din::CreateCurveKeyFiles(dir);
  if (!st.ok()) {
    std::fprintf(stderr, "din_keys: %s\n", st.ToString().c_str());
    return 1;
  }
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(dir, ec);
  std::printf("%s\n", ec ? dir.c_str() : abs.c_str());
  return 0;
}
