// The tokens file, the authorization header, scopes and reloading (server/auth.h).
#include "server/auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

namespace normserve {
namespace {

namespace fs = std::filesystem;
using Code = AuthDecision::Code;

constexpr char kInfer[] = "infer-token-0123456789";
constexpr char kAdmin[] = "admin-token-0123456789";

std::string ParseError(const std::string& text) {
  std::vector<TokenEntry> tokens;
  std::string error;
  EXPECT_FALSE(ParseTokensFile(text, &tokens, &error)) << text;
  return error;
}

TEST(TokensFileTest, ReadsScopesSkippingCommentsAndBlankLines) {
  std::vector<TokenEntry> tokens;
  std::string error;
  ASSERT_TRUE(ParseTokensFile(
      "# normserve tokens\n\n  infer   infer-token-0123456789  \r\nadmin\tadmin-token-0123456789\n"
      "   # indented comment\n",
      &tokens, &error))
      << error;
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[0].scope, Scope::kInfer);
  EXPECT_EQ(tokens[0].token, kInfer);
  EXPECT_EQ(tokens[1].scope, Scope::kAdmin);
  EXPECT_EQ(tokens[1].token, kAdmin);
}

TEST(TokensFileTest, AnEmptyFileHasNoTokens) {
  std::vector<TokenEntry> tokens = {{Scope::kInfer, kInfer}};
  std::string error;
  EXPECT_TRUE(ParseTokensFile("", &tokens, &error));
  EXPECT_TRUE(tokens.empty());
}

TEST(TokensFileTest, ErrorsNameTheLineButNeverItsText) {
  const std::string secret = "s3cret-token-abcdefghij";
  const struct {
    std::string text;
    std::string expected;
  } cases[] = {
      {"infer " + std::string(kInfer) + "\n" + secret + "\n", "line 2: the scope is not"},
      {"\n\nroot " + secret, "line 3: the scope is not"},
      {"infer", "line 1: no token"},
      {"admin short-token", "line 1: the token must have 16"},
      {"admin " + std::string(1025, 'x'), "line 1: the token must have 16"},
      {"infer s3cret-token abcdefghij", "line 1: whitespace inside the token"},
      {"infer s3cret-token-\x01"
       "abcdefghij",
       "line 1: the token has a character outside"},
      {"infer s3cret-token-\xc3\xa4"
       "bcdefghij",
       "line 1: the token has a character outside"},
      {"infer " + secret + "\n# x\nadmin " + secret, "line 3: the same token as line 1"},
  };
  for (const auto& c : cases) {
    const std::string error = ParseError(c.text);
    EXPECT_NE(error.find(c.expected), std::string::npos) << error;
    EXPECT_EQ(error.find("s3cret"), std::string::npos) << error;
    EXPECT_EQ(error.find("root"), std::string::npos) << error;
  }
}

TEST(BearerTest, AcceptsExactlyTheSchemeOneSpaceAndAToken) {
  for (const char* header : {"Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc"}) {
    std::string_view token;
    ASSERT_TRUE(ParseBearer(header, &token)) << header;
    EXPECT_EQ(token, "abc");
  }
  for (const char* header :
       {"", "Bearer", "Bearer ", "Bearer  abc", "Bearer abc ", "Bearer a b", "Bearerabc",
        "Basic abc", "Token abc", " Bearer abc", "Bearer\tabc", "Bearer abc\x7f"}) {
    std::string_view token;
    EXPECT_FALSE(ParseBearer(header, &token)) << header;
  }
}

TEST(ConstantTimeEqualsTest, EqualOnlyForTheSameBytes) {
  EXPECT_TRUE(ConstantTimeEquals("abcdef", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdeg", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdefabc", "abcdef"));  // the secret repeated
  EXPECT_FALSE(ConstantTimeEquals("", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(OpenAuthorizerTest, InferForEveryoneAdminOnlyWhenAllowed) {
  auto closed = Authorizer::Open(false);
  EXPECT_EQ(closed->Check(nullptr, Scope::kInfer).code, Code::kOk);
  EXPECT_FALSE(closed->Check(nullptr, Scope::kInfer).admin);
  const AuthDecision admin = closed->Check(nullptr, Scope::kAdmin);
  EXPECT_EQ(admin.code, Code::kAdminOff);
  EXPECT_NE(admin.message.find("--allow-unauthenticated-admin"), std::string::npos);

  auto open = Authorizer::Open(true);
  EXPECT_EQ(open->Check(nullptr, Scope::kAdmin).code, Code::kOk);
  EXPECT_TRUE(open->Check(nullptr, Scope::kInfer).admin);
}

class TokensFileAuthorizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("normserve-auth-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
    path_ = (dir_ / "tokens").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A new file renamed over the old one: what an operator should do, and a new inode.
  void Replace(const std::string& text) {
    const std::string staging = path_ + ".new";
    std::ofstream(staging) << text;
    fs::rename(staging, path_);
  }
  std::unique_ptr<Authorizer> Open(const std::string& text) {
    Replace(text);
    return Authorizer::FromFile(path_, [this] { return now_; });
  }
  static AuthDecision Check(Authorizer& authorizer, const std::string& header, Scope scope) {
    const std::string_view view = header;
    return authorizer.Check(&view, scope);
  }
  static std::string Bearer(const std::string& token) { return "Bearer " + token; }

  fs::path dir_;
  std::string path_;
  std::chrono::steady_clock::time_point now_;
};

TEST_F(TokensFileAuthorizerTest, CodesForMissingWrongAndUnderScopedTokens) {
  auto auth = Open(std::string("infer ") + kInfer + "\nadmin " + kAdmin + "\n");
  EXPECT_EQ(auth->count(Scope::kInfer), 1);
  EXPECT_EQ(auth->count(Scope::kAdmin), 1);

  const AuthDecision missing = auth->Check(nullptr, Scope::kInfer);
  EXPECT_EQ(missing.code, Code::kUnauthenticated);
  EXPECT_NE(missing.message.find("authorization: Bearer <token>"), std::string::npos);

  const AuthDecision malformed = Check(*auth, kInfer, Scope::kInfer);  // no scheme
  EXPECT_EQ(malformed.code, Code::kUnauthenticated);
  EXPECT_NE(malformed.message.find("'Bearer <token>'"), std::string::npos);
  EXPECT_EQ(malformed.message.find(kInfer), std::string::npos);

  const std::string wrong = "wrong-token-0123456789";
  const AuthDecision unknown = Check(*auth, Bearer(wrong), Scope::kInfer);
  EXPECT_EQ(unknown.code, Code::kUnauthenticated);
  EXPECT_EQ(unknown.message.find(wrong), std::string::npos);
  // A prefix or an extension of a valid token is no token.
  EXPECT_EQ(Check(*auth, Bearer(std::string(kInfer) + "x"), Scope::kInfer).code,
            Code::kUnauthenticated);
  EXPECT_EQ(Check(*auth, Bearer(std::string(kInfer).substr(1)), Scope::kInfer).code,
            Code::kUnauthenticated);

  const AuthDecision infer = Check(*auth, Bearer(kInfer), Scope::kInfer);
  EXPECT_EQ(infer.code, Code::kOk);
  EXPECT_FALSE(infer.admin);
  const AuthDecision denied = Check(*auth, Bearer(kInfer), Scope::kAdmin);
  EXPECT_EQ(denied.code, Code::kPermissionDenied);
  EXPECT_NE(denied.message.find("scope admin"), std::string::npos);
  EXPECT_EQ(denied.message.find(kInfer), std::string::npos);

  // admin implies infer.
  const AuthDecision admin_infers = Check(*auth, Bearer(kAdmin), Scope::kInfer);
  EXPECT_EQ(admin_infers.code, Code::kOk);
  EXPECT_TRUE(admin_infers.admin);
  EXPECT_EQ(Check(*auth, Bearer(kAdmin), Scope::kAdmin).code, Code::kOk);
}

TEST_F(TokensFileAuthorizerTest, AnInvalidOrMissingFileRefusesToStartWithoutTheToken) {
  Replace(std::string("infer ") + kInfer + "\nadmin tooshort\n");
  try {
    Authorizer::FromFile(path_);
    FAIL() << "an invalid tokens file was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("tooshort"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Authorizer::FromFile((dir_ / "missing").string()), std::runtime_error);
}

TEST_F(TokensFileAuthorizerTest, AChangedFileTakesEffectWithinASecond) {
  auto auth = Open(std::string("infer ") + kInfer + "\n");
  const std::string rotated = "rotated-token-0123456789";
  Replace("infer " + rotated + "\n");
  // Looked at most once per second: the same second still has the old tokens.
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kOk);
  now_ += std::chrono::milliseconds(999);
  EXPECT_EQ(Check(*auth, Bearer(rotated), Scope::kInfer).code, Code::kUnauthenticated);
  now_ += std::chrono::milliseconds(1);
  EXPECT_EQ(Check(*auth, Bearer(rotated), Scope::kInfer).code, Code::kOk);
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kUnauthenticated);

  // Rewritten in place (same file, another size) and made admin.
  std::ofstream(path_, std::ios::trunc) << "admin " << rotated << "-longer\n";
  now_ += std::chrono::seconds(1);
  EXPECT_EQ(Check(*auth, Bearer(rotated + "-longer"), Scope::kAdmin).code, Code::kOk);
  EXPECT_EQ(auth->count(Scope::kAdmin), 1);
}

TEST_F(TokensFileAuthorizerTest, ABadOrMissingFileKeepsTheTokensInUse) {
  auto auth = Open(std::string("infer ") + kInfer + "\n");
  Replace("infer short\n");
  auth->ReloadIfChanged();
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kOk);

  fs::remove(path_);
  auth->ReloadIfChanged();
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kOk);

  fs::create_directories(path_);  // not a regular file
  auth->ReloadIfChanged();
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kOk);
  fs::remove(path_);

  // Fixed again: the new tokens replace the old ones.
  Replace(std::string("admin ") + kAdmin + "\n");
  auth->ReloadIfChanged();
  EXPECT_EQ(Check(*auth, Bearer(kAdmin), Scope::kAdmin).code, Code::kOk);
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kUnauthenticated);
}

TEST_F(TokensFileAuthorizerTest, AnEmptiedFileRevokesEveryToken) {
  auto auth = Open(std::string("infer ") + kInfer + "\n");
  Replace("# every token revoked\n");
  auth->ReloadIfChanged();
  EXPECT_EQ(Check(*auth, Bearer(kInfer), Scope::kInfer).code, Code::kUnauthenticated);
}

}  // namespace
}  // namespace normserve
