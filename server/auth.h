// Bearer-token authentication of the gRPC API: the tokens file, the `authorization` header,
// scopes, and the check each NormServe handler makes before anything else.
//
// Why in the handlers and not in gRPC: an AuthMetadataProcessor belongs to the server
// credentials, so it would not run on a plaintext port; one call at the start of each
// handler works the same with and without TLS. Health stays open (load balancers and
// kubelets probe it without tokens). Server reflection cannot be gated this way, so it is
// not served when tokens are configured unless asked (--enable-reflection; server/server.cc).
//
// No gRPC here: the service passes the header's value in and maps the decision to a status.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace normserve {

// admin implies infer.
enum class Scope { kInfer, kAdmin };
const char* ScopeName(Scope scope);

struct TokenEntry {
  Scope scope;
  std::string token;
};

// Tokens shorter than this are refused: a guessable token is no authentication.
constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 1024;

// Parses a tokens file: one `scope token` per line (scope infer or admin), blank lines and
// lines starting with '#' ignored. Returns false with *error naming the line number on an
// unknown scope, a short or long token, whitespace or a non-printable character inside a
// token, or a duplicate token. Nothing of the line's text is ever echoed: a token
// misplaced into the scope's field would end up in the log.
bool ParseTokensFile(std::string_view text, std::vector<TokenEntry>* tokens, std::string* error);

// Parses an `authorization` header value: exactly `Bearer <token>` (the scheme in any case,
// one space, a token without whitespace). False when it is anything else.
bool ParseBearer(std::string_view header, std::string_view* token);

// Compares without an early exit: the time depends on the length of `presented` only, not on
// where it first differs from `secret`.
bool ConstantTimeEquals(std::string_view presented, std::string_view secret);

struct AuthDecision {
  // kUnauthenticated: no token, a malformed header or an unknown token. kPermissionDenied:
  // a valid token without the scope. kAdminOff: no caller can have admin on this server (no
  // tokens file and no --allow-unauthenticated-admin): FAILED_PRECONDITION, for the operator.
  enum class Code { kOk, kUnauthenticated, kPermissionDenied, kAdminOff };
  Code code = Code::kOk;
  std::string message;  // what is missing; never the token
  bool admin = false;   // the caller holds the admin scope (it sees ModelInfo.path)
};

class Authorizer {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // Without tokens: every caller has infer, and admin too when `allow_admin`
  // (--allow-unauthenticated-admin).
  static std::unique_ptr<Authorizer> Open(bool allow_admin);
  // Reads the tokens file now; throws std::runtime_error naming the file (and the line) when it
  // cannot be read or is invalid. The file is looked at again at most once per second of
  // `clock` on the request path (Check), and re-read when its identity, size or mtime changed.
  static std::unique_ptr<Authorizer> FromFile(const std::string& path,
                                              Clock clock = std::chrono::steady_clock::now);

  // `authorization`: the header's value, or nullptr when the call carries none.
  AuthDecision Check(const std::string_view* authorization, Scope required);

  // Re-reads the file when it changed. A file that became unreadable or invalid keeps the
  // tokens in use and logs the error (without any token). Check calls it once per second.
  void ReloadIfChanged();

  bool has_tokens_file() const { return !path_.empty(); }
  int count(Scope scope) const;

 private:
  struct FileStamp {
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = -1;
    int64_t mtime_ns = -1;
    int64_t ctime_ns = -1;  // changes with chmod too: a file made readable again is re-read
    bool operator==(const FileStamp& o) const {
      return device == o.device && inode == o.inode && size == o.size && mtime_ns == o.mtime_ns &&
             ctime_ns == o.ctime_ns;
    }
  };

  Authorizer(std::string path, bool allow_admin, Clock clock);
  // The file's stamp; false when it cannot be looked at.
  bool Stat(FileStamp* stamp) const;
  // Reads and parses the file, and stamps what it read; false with *error when it cannot.
  bool Read(std::vector<TokenEntry>* tokens, FileStamp* stamp, std::string* error) const;
  std::shared_ptr<const std::vector<TokenEntry>> Tokens() const;

  const std::string path_;  // empty: no tokens file
  const bool allow_admin_;
  const Clock clock_;

  mutable std::mutex mutex_;  // guards tokens_, stamp_ and next_look_
  std::shared_ptr<const std::vector<TokenEntry>> tokens_;
  FileStamp stamp_;
  std::chrono::steady_clock::time_point next_look_;
};

}  // namespace normserve
