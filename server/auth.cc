#include "server/auth.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>

#include "server/log.h"

namespace normserve {
namespace {

constexpr auto kLookInterval = std::chrono::seconds(1);
constexpr size_t kMaxFileBytes = 1 << 20;  // a tokens file is a few lines

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }
bool IsPrintable(char c) { return c > ' ' && c < 0x7f; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

int64_t Nanoseconds(const timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// The rule of a line, with its number; never its text (it may hold a token).
std::string LineError(int line, const std::string& what) {
  return "line " + std::to_string(line) + ": " + what + " (each line is `scope token`)";
}

}  // namespace

const char* ScopeName(Scope scope) { return scope == Scope::kAdmin ? "admin" : "infer"; }

bool ParseTokensFile(std::string_view text, std::vector<TokenEntry>* tokens, std::string* error) {
  tokens->clear();
  std::map<std::string_view, int> first_line;  // token -> the line it first appeared on
  int line_number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = Trim(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    size_t split = 0;
    while (split < line.size() && !IsBlank(line[split])) ++split;
    const std::string_view scope_name = line.substr(0, split);
    const std::string_view token = Trim(line.substr(split));
    Scope scope;
    if (scope_name == "infer") {
      scope = Scope::kInfer;
    } else if (scope_name == "admin") {
      scope = Scope::kAdmin;
    } else {
      *error = LineError(line_number, "the scope is not infer or admin");
      return false;
    }
    if (token.empty()) {
      *error = LineError(line_number, "no token after the scope");
      return false;
    }
    for (char c : token) {
      if (IsBlank(c)) {
        *error = LineError(line_number, "whitespace inside the token");
        return false;
      }
      if (!IsPrintable(c)) {
        *error = LineError(line_number, "the token has a character outside printable ASCII");
        return false;
      }
    }
    if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
      *error = LineError(line_number, "the token must have " + std::to_string(kMinTokenLength) +
                                          " to " + std::to_string(kMaxTokenLength) + " characters");
      return false;
    }
    if (const auto [it, inserted] = first_line.emplace(token, line_number); !inserted) {
      *error = LineError(line_number, "the same token as line " + std::to_string(it->second));
      return false;
    }
    tokens->push_back({scope, std::string(token)});
  }
  return true;
}

bool ParseBearer(std::string_view header, std::string_view* token) {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    const char c = header[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return false;
  }
  const std::string_view rest = header.substr(kScheme.size());
  for (char c : rest) {
    if (!IsPrintable(c)) return false;
  }
  *token = rest;
  return true;
}

bool ConstantTimeEquals(std::string_view presented, std::string_view secret) {
  // Every byte of `presented` is compared (against `secret` repeated, when lengths differ), so
  // neither the first difference nor the secret's length shows in the time taken.
  if (secret.empty()) return presented.empty();
  unsigned difference = presented.size() != secret.size() ? 1 : 0;
  for (size_t i = 0; i < presented.size(); ++i) {
    difference |= static_cast<unsigned char>(presented[i]) ^
                  static_cast<unsigned char>(secret[i % secret.size()]);
  }
  return difference == 0;
}

std::unique_ptr<Authorizer> Authorizer::Open(bool allow_admin) {
  return std::unique_ptr<Authorizer>(new Authorizer("", allow_admin, {}));
}

std::unique_ptr<Authorizer> Authorizer::FromFile(const std::string& path, Clock clock) {
  if (path.empty()) throw std::runtime_error("--auth-tokens-file names no file");
  std::unique_ptr<Authorizer> authorizer(new Authorizer(path, false, std::move(clock)));
  std::vector<TokenEntry> tokens;
  std::string error;
  if (!authorizer->Read(&tokens, &authorizer->stamp_, &error)) {
    throw std::runtime_error("--auth-tokens-file " + path + ": " + error);
  }
  authorizer->tokens_ = std::make_shared<const std::vector<TokenEntry>>(std::move(tokens));
  authorizer->next_look_ = authorizer->clock_() + kLookInterval;
  return authorizer;
}

Authorizer::Authorizer(std::string path, bool allow_admin, Clock clock)
    : path_(std::move(path)),
      allow_admin_(allow_admin),
      clock_(std::move(clock)),
      tokens_(std::make_shared<const std::vector<TokenEntry>>()) {}

bool Authorizer::Stat(FileStamp* stamp) const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return false;
  *stamp = {st.st_dev, st.st_ino, st.st_size, Nanoseconds(st.st_mtim), Nanoseconds(st.st_ctim)};
  return true;
}

bool Authorizer::Read(std::vector<TokenEntry>* tokens, FileStamp* stamp, std::string* error) const {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  // The stamp of the file descriptor: of exactly the file read, even if it is replaced now.
  struct stat st {};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0;
  if (ok && S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) <= kMaxFileBytes) {
    text.resize(kMaxFileBytes + 1);
    size_t used = 0;
    ssize_t got = 0;
    while ((got = ::read(fd, text.data() + used, text.size() - used)) > 0) used += got;
    ok = got == 0 && used <= kMaxFileBytes;
    text.resize(used);
    if (!ok) *error = "cannot read it, or it has grown past 1 MiB";
  } else {
    ok = false;
    *error = "not a regular file of at most 1 MiB";
  }
  ::close(fd);
  *stamp = {st.st_dev, st.st_ino, st.st_size, Nanoseconds(st.st_mtim), Nanoseconds(st.st_ctim)};
  return ok && ParseTokensFile(text, tokens, error);
}

void Authorizer::ReloadIfChanged() {
  if (path_.empty()) return;
  FileStamp now;
  const bool exists = Stat(&now);
  const int stat_errno = errno;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exists && now == stamp_) return;
    if (!exists && stamp_ == FileStamp{}) return;  // still missing: said so already
  }
  std::vector<TokenEntry> tokens;
  FileStamp read_stamp;
  std::string error;
  if (!exists) {
    error = std::string("cannot look at it: ") + std::strerror(stat_errno);
  } else if (Read(&tokens, &read_stamp, &error)) {
    auto fresh = std::make_shared<const std::vector<TokenEntry>>(std::move(tokens));
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tokens_ = fresh;
      stamp_ = read_stamp;
    }
    LogInfo("--auth-tokens-file " + path_ + " re-read: " + std::to_string(count(Scope::kInfer)) +
            " infer and " + std::to_string(count(Scope::kAdmin)) + " admin token(s)");
    return;
  }
  // Remember the stamp of the bad file, so the error is logged once per change, not per second.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stamp_ = exists ? read_stamp : FileStamp{};
  }
  LogError("--auth-tokens-file " + path_ + ": " + error + "; the tokens read before stay in use");
}

std::shared_ptr<const std::vector<TokenEntry>> Authorizer::Tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tokens_;
}

int Authorizer::count(Scope scope) const {
  int n = 0;
  for (const TokenEntry& entry : *Tokens()) n += entry.scope == scope ? 1 : 0;
  return n;
}

AuthDecision Authorizer::Check(const std::string_view* authorization, Scope required) {
  using Code = AuthDecision::Code;
  if (path_.empty()) {
    if (required == Scope::kAdmin && !allow_admin_) {
      return {Code::kAdminOff,
              "admin RPCs are off on this server: start it with --auth-tokens-file holding an "
              "admin token, or with --allow-unauthenticated-admin for local use (LoadModel and "
              "UnloadModel also need --model-control explicit)",
              false};
    }
    return {Code::kOk, "", allow_admin_};
  }
  bool look = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = clock_();
    if (now >= next_look_) {
      next_look_ = now + kLookInterval;
      look = true;  // this call looks; the others of this second do not wait for it
    }
  }
  if (look) ReloadIfChanged();

  const std::string needed = std::string("a token of scope ") + ScopeName(required);
  if (authorization == nullptr) {
    return {Code::kUnauthenticated,
            "this call needs " + needed + ": send the metadata 'authorization: Bearer <token>'",
            false};
  }
  std::string_view token;
  if (!ParseBearer(*authorization, &token)) {
    return {Code::kUnauthenticated,
            "the authorization metadata must be 'Bearer <token>' (the scheme, one space, the "
            "token) with " +
                needed,
            false};
  }
  // Against every token, without stopping at a match: the time does not tell which matched.
  bool known = false;
  bool admin = false;
  for (const TokenEntry& entry : *Tokens()) {
    const bool equal = ConstantTimeEquals(token, entry.token);
    known |= equal;
    admin |= equal & (entry.scope == Scope::kAdmin);
  }
  if (!known) {
    return {Code::kUnauthenticated,
            "the token is not valid on this server (unknown, or no longer in its tokens file); "
            "this call needs " +
                needed,
            false};
  }
  if (required == Scope::kAdmin && !admin) {
    return {Code::kPermissionDenied,
            "this call needs " + needed + "; the token sent has scope infer", false};
  }
  return {Code::kOk, "", admin};
}

}  // namespace normserve
