#include "common/net/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <zmq.h>

namespace din {
namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string OctalMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string Join(const std::string& dir, const char* name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

Status CheckSecurity(const config::SecurityConfig& security) {
  if (!security.curve()) return Status::InvalidArgument("security.curve is off");
  if (security.key_dir().empty())
    return Status::InvalidArgument(
        "security.curve is on but security.key_dir is empty (create the job's keys with "
        "din_keys DIR and set security.key_dir=DIR; launch/din-train does both)");
  if (!CurveAvailable())
    return Status::Unimplemented(
        "security.curve is on but this libzmq was built without CURVE (libsodium)");
  return Status::Ok();
}

// Reads the pair NAME / NAME_secret and checks that the secret key derives the public.
Result<CurveKeyPair> LoadPair(const std::string& dir, const char* public_name,
                              const char* secret_name) {
  CurveKeyPair pair;
  DIN_ASSIGN_OR_RETURN(pair.public_key, ReadCurveKeyFile(Join(dir, public_name)));
  DIN_ASSIGN_OR_RETURN(pair.secret_key, ReadCurveKeyFile(Join(dir, secret_name)));
  char derived[kZ85KeyLength + 1];
  if (zmq_curve_public(derived, pair.secret_key.c_str()) != 0)
    return Status::InvalidArgument("CURVE key file " + Join(dir, secret_name) +
                                   ": cannot derive its public key: " + zmq_strerror(zmq_errno()));
  if (pair.public_key != derived)
    return Status::InvalidArgument("CURVE key files " + Join(dir, secret_name) + " and " +
                                   Join(dir, public_name) +
                                   " do not belong together (the public key is not the secret "
                                   "key's); create the job's keys again with din_keys");
  return pair;
}

Status WriteKeyFile(const std::string& path, const std::string& z85) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0)
    return Status::IoError("cannot create CURVE key file " + path + ": " + std::strerror(errno));
  // The umask may only have removed bits; make the mode exactly 0600.
  if (::fchmod(fd.get(), 0600) != 0)
    return Status::IoError("cannot chmod CURVE key file " + path + ": " + std::strerror(errno));
  const std::string text = z85 + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return Status::IoError("cannot write CURVE key file " + path + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0)
    return Status::IoError("cannot write CURVE key file " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace

bool CurveAvailable() { return zmq_has("curve") != 0; }

Result<CurveKeyPair> NewCurveKeyPair() {
  char pub[kZ85KeyLength + 1];
  char sec[kZ85KeyLength + 1];
  if (zmq_curve_keypair(pub, sec) != 0)
    return Status::Unimplemented(std::string("cannot create a CURVE key pair: ") +
                                 zmq_strerror(zmq_errno()));
  return CurveKeyPair{pub, sec};
}

Result<std::string> ReadCurveKeyFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    const std::string what = "CURVE key file " + path;
    if (err == ENOENT)
      return Status::NotFound(what + " does not exist (create the job's keys with din_keys)");
    return Status::IoError("cannot read " + what + ": " + std::strerror(err));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0)
    return Status::IoError("cannot stat CURVE key file " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return Status::InvalidArgument("CURVE key file " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0)
    return Status::InvalidArgument("CURVE key file " + path + " has mode " + OctalMode(st.st_mode) +
                                   ": group or others may access it (it must be 0600)");
  // A key file is 40 characters and a newline; anything much longer is not one.
  char buf[128];
  size_t len = 0;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf + len, sizeof(buf) - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Status::IoError("cannot read CURVE key file " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    len += static_cast<size_t>(n);
    if (len == sizeof(buf)) break;
  }
  std::string_view text(buf, len);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.remove_suffix(1);
  const std::string malformed = "CURVE key file " + path + " is malformed: ";
  if (text.size() != kZ85KeyLength)
    return Status::InvalidArgument(malformed + "expected one Z85 key of " +
                                   std::to_string(kZ85KeyLength) + " characters, found " +
                                   std::to_string(text.size()) + " bytes");
  const size_t bad = text.find_first_not_of(kZ85Alphabet);
  if (bad != std::string_view::npos)
    return Status::InvalidArgument(malformed + "character " + std::to_string(bad + 1) +
                                   " is not Z85");
  std::string key(text);
  uint8_t raw[32];
  if (zmq_z85_decode(raw, key.c_str()) == nullptr)
    return Status::InvalidArgument(malformed + "not a valid Z85 key");
  return key;
}

Result<ServerCurveKeys> LoadServerCurveKeys(const config::SecurityConfig& security) {
  DIN_RETURN_IF_ERROR(CheckSecurity(security));
  ServerCurveKeys keys;
  DIN_ASSIGN_OR_RETURN(keys.server,
                       LoadPair(security.key_dir(), kServerPublicKeyFile, kServerSecretKeyFile));
  DIN_ASSIGN_OR_RETURN(keys.client_public_key,
                       ReadCurveKeyFile(Join(security.key_dir(), kClientPublicKeyFile)));
  return keys;
}

Result<ClientCurveKeys> LoadClientCurveKeys(const config::SecurityConfig& security) {
  DIN_RETURN_IF_ERROR(CheckSecurity(security));
  ClientCurveKeys keys;
  DIN_ASSIGN_OR_RETURN(keys.client,
                       LoadPair(security.key_dir(), kClientPublicKeyFile, kClientSecretKeyFile));
  DIN_ASSIGN_OR_RETURN(keys.server_public_key,
                       ReadCurveKeyFile(Join(security.key_dir(), kServerPublicKeyFile)));
  return keys;
}

Status CreateCurveKeyFiles(const std::string& dir) {
  if (dir.empty()) return Status::InvalidArgument("no key directory given");
  if (!CurveAvailable())
    return Status::Unimplemented("this libzmq was built without CURVE (libsodium)");
  if (::mkdir(dir.c_str(), 0700) != 0) {
    if (errno != EEXIST)
      return Status::IoError("cannot create key directory " + dir + ": " + std::strerror(errno));
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Status::InvalidArgument("key directory " + dir + " exists and is not a directory");
    if ((st.st_mode & 077) != 0)
      return Status::InvalidArgument("key directory " + dir + " exists with mode " +
                                     OctalMode(st.st_mode) +
                                     ": group or others may access it (it must be 0700)");
  } else if (::chmod(dir.c_str(), 0700) != 0) {  // exactly 0700 whatever the umask
    return Status::IoError("cannot chmod key directory " + dir + ": " + std::strerror(errno));
  }
  DIN_ASSIGN_OR_RETURN(CurveKeyPair server, NewCurveKeyPair());
  DIN_ASSIGN_OR_RETURN(CurveKeyPair client, NewCurveKeyPair());
  // Secret keys first: a directory with a public key file always has its secret.
  DIN_RETURN_IF_ERROR(WriteKeyFile(Join(dir, kServerSecretKeyFile), server.secret_key));
  DIN_RETURN_IF_ERROR(WriteKeyFile(Join(dir, kServerPublicKeyFile), server.public_key));
  DIN_RETURN_IF_ERROR(WriteKeyFile(Join(dir, kClientSecretKeyFile), client.secret_key));
  DIN_RETURN_IF_ERROR(WriteKeyFile(Join(dir, kClientPublicKeyFile), client.public_key));
  return Status::Ok();
}

}  // namespace din
