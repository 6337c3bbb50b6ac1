// The CURVE key files (common/net/curve_keys.h): creation by CreateCurveKeyFiles (din_keys)
// and every way loading them is refused, each with a message naming the file.
#include "common/net/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace din {
namespace {

using test::TempDir;
using ::testing::HasSubstr;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  CHECK_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  std::filesystem::remove(path);
  std::ofstream(path) << text;
  CHECK_EQ(::chmod(path.c_str(), mode), 0);
}

config::SecurityConfig Security(const std::string& dir) {
  config::SecurityConfig s;
  s.set_curve(true);
  s.set_key_dir(dir);
  return s;
}

TEST(CurveKeysTest, LibzmqHasCurve) { ASSERT_TRUE(CurveAvailable()); }

TEST(CurveKeysTest, CreateWritesPrivateFilesThatLoad) {
  TempDir tmp;
  const std::string dir = tmp / "keys";
  ASSERT_TRUE(CreateCurveKeyFiles(dir).ok());
  EXPECT_EQ(ModeOf(dir), 0700u);
  for (const char* f :
       {kServerPublicKeyFile, kServerSecretKeyFile, kClientPublicKeyFile, kClientSecretKeyFile}) {
    EXPECT_EQ(ModeOf(dir + "/" + f), 0600u) << f;
  }
  auto server = LoadServerCurveKeys(Security(dir));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto client = LoadClientCurveKeys(Security(dir));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_EQ(server->server.public_key, client->server_public_key);
  EXPECT_EQ(server->client_public_key, client->client.public_key);
  EXPECT_NE(server->server.public_key, client->client.public_key);
  EXPECT_EQ(server->server.public_key.size(), kZ85KeyLength);
  EXPECT_EQ(server->server.secret_key.size(), kZ85KeyLength);

  // Two jobs never share keys.
  ASSERT_TRUE(CreateCurveKeyFiles(tmp / "keys2").ok());
  auto other = LoadServerCurveKeys(Security(tmp / "keys2"));
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->server.secret_key, server->server.secret_key);
  EXPECT_NE(other->client_public_key, server->client_public_key);
}

TEST(CurveKeysTest, CreateNeverOverwritesAndRefusesAnOpenDirectory) {
  TempDir tmp;
  const std::string dir = tmp / "keys";
  ASSERT_TRUE(CreateCurveKeyFiles(dir).ok());
  const std::string before = LoadServerCurveKeys(Security(dir))->server.secret_key;
  Status again = CreateCurveKeyFiles(dir);
  EXPECT_FALSE(again.ok());
  EXPECT_THAT(again.message(), HasSubstr(dir + "/" + kServerSecretKeyFile));
  EXPECT_EQ(LoadServerCurveKeys(Security(dir))->server.secret_key, before);

  const std::string open_dir = tmp / "open";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0755), 0);
  Status st = CreateCurveKeyFiles(open_dir);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr(open_dir));
  EXPECT_THAT(st.message(), HasSubstr("0755"));

  // An empty private directory (e.g. from mkdtemp) is fine.
  const std::string private_dir = tmp / "private";
  ASSERT_EQ(::mkdir(private_dir.c_str(), 0700), 0);
  EXPECT_TRUE(CreateCurveKeyFiles(private_dir).ok());
}

TEST(CurveKeysTest, MissingFileIsNamed) {
  TempDir tmp;
  const std::string dir = tmp / "keys";
  ASSERT_TRUE(CreateCurveKeyFiles(dir).ok());
  std::filesystem::remove(dir + "/" + kClientPublicKeyFile);
  auto server = LoadServerCurveKeys(Security(dir));
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(server.status().message(), HasSubstr(dir + "/" + kClientPublicKeyFile));
  EXPECT_THAT(server.status().message(), HasSubstr("does not exist"));

  auto client = LoadClientCurveKeys(Security(tmp / "nowhere"));
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr(tmp / "nowhere"));
}

TEST(CurveKeysTest, FileOpenToGroupOrOthersIsRefused) {
  TempDir tmp;
  const std::string dir = tmp / "keys";
  ASSERT_TRUE(CreateCurveKeyFiles(dir).ok());
  const std::string secret = dir + "/" + kServerSecretKeyFile;
  for (mode_t mode : {0640, 0604, 0660, 0644}) {
    ASSERT_EQ(::chmod(secret.c_str(), mode), 0);
    auto keys = LoadServerCurveKeys(Security(dir));
    ASSERT_FALSE(keys.ok()) << std::oct << mode;
    EXPECT_EQ(keys.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(keys.status().message(), HasSubstr(secret));
    EXPECT_THAT(keys.status().message(), HasSubstr("group or others"));
  }
  // Owner-only modes are accepted, read-only included.
  ASSERT_EQ(::chmod(secret.c_str(), 0400), 0);
  EXPECT_TRUE(LoadServerCurveKeys(Security(dir)).ok());
  // The client's files are checked the same way.
  const std::string client_secret = dir + "/" + kClientSecretKeyFile;
  ASSERT_EQ(::chmod(client_secret.c_str(), 0644), 0);
  auto client = LoadClientCurveKeys(Security(dir));
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr(client_secret));
  EXPECT_THAT(client.status().message(), HasSubstr("0644"));
}

TEST(CurveKeysTest, MalformedFilesAreRefused) {
  TempDir tmp;
  const std::string dir = tmp / "keys";
  ASSERT_TRUE(CreateCurveKeyFiles(dir).ok());
  const std::string pub = dir + "/" + kServerPublicKeyFile;
  const std::string good = *ReadCurveKeyFile(pub);
  std::string comma = good;
  comma[7] = ',';
  for (const std::string& text : {std::string(), std::string("hello\n"), good.substr(0, 39) + "\n",
                                  good + good + "\n", comma + "\n", std::string(1000, 'a')}) {
    WriteFile(pub, text, 0600);
    auto keys = LoadClientCurveKeys(Security(dir));
    ASSERT_FALSE(keys.ok()) << text;
    EXPECT_EQ(keys.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(keys.status().message(), HasSubstr(pub));
    EXPECT_THAT(keys.status().message(), HasSubstr("malformed"));
  }
  // With or without a final newline, the right key reads back.
  WriteFile(pub, good, 0600);
  EXPECT_TRUE(LoadClientCurveKeys(Security(dir)).ok());

  // Not a file at all.
  const std::string secret = dir + "/" + kClientSecretKeyFile;
  std::filesystem::remove(secret);
  ASSERT_EQ(::mkdir(secret.c_str(), 0700), 0);
  auto dir_as_key = LoadClientCurveKeys(Security(dir));
  ASSERT_FALSE(dir_as_key.ok());
  EXPECT_THAT(dir_as_key.status().message(), HasSubstr(secret));
}

TEST(CurveKeysTest, KeysFromTwoJobsDoNotMix) {
  TempDir tmp;
  ASSERT_TRUE(CreateCurveKeyFiles(tmp / "a").ok());
  ASSERT_TRUE(CreateCurveKeyFiles(tmp / "b").ok());
  // Job a's client public key next to job b's client secret key.
  std::filesystem::remove(tmp / "b/client.key");
  std::filesystem::copy_file(tmp / "a/client.key", tmp / "b/client.key");
  auto keys = LoadClientCurveKeys(Security(tmp / "b"));
  ASSERT_FALSE(keys.ok());
  EXPECT_THAT(keys.status().message(), HasSubstr("do not belong together"));
  EXPECT_THAT(keys.status().message(), HasSubstr(tmp / "b/client.key_secret"));
}

TEST(CurveKeysTest, CurveWithoutKeyDirIsRefused) {
  config::SecurityConfig s;
  s.set_curve(true);
  auto keys = LoadServerCurveKeys(s);
  ASSERT_FALSE(keys.ok());
  EXPECT_THAT(keys.status().message(), HasSubstr("security.key_dir"));
}

}  // namespace
}  // namespace din
