// libFuzzer target for what a client or an operator hands to server/auth.cc: the same bytes
// as a tokens file and as an authorization header, each checked against an independent
// statement of its rules, and the constant-time comparison against ==.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "server/auth.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

bool Printable(char c) { return c > ' ' && c < 0x7f; }

// Every message the parser may give, with its numbers taken out: an error built from
// anything else would echo the file (and so, maybe, a token) into the log.
bool IsKnownError(const std::string& error) {
  static const std::set<std::string> kMessages = {
      "line : the scope is not infer or admin (each line is `scope token`)",
      "line : no token after the scope (each line is `scope token`)",
      "line : whitespace inside the token (each line is `scope token`)",
      "line : the token has a character outside printable ASCII (each line is `scope token`)",
      "line : the token must have  to  characters (each line is `scope token`)",
      "line : the same token as line  (each line is `scope token`)",
  };
  std::string without_digits;
  for (char c : error) {
    if (c < '0' || c > '9') without_digits += c;
  }
  return kMessages.count(without_digits) == 1;
}

void CheckTokensFile(std::string_view text) {
  std::vector<normserve::TokenEntry> tokens;
  std::string error;
  if (!normserve::ParseTokensFile(text, &tokens, &error)) {
    Check(IsKnownError(error));
    return;
  }
  std::set<std::string> seen;
  std::string rewritten;
  for (const auto& entry : tokens) {
    Check(entry.token.size() >= normserve::kMinTokenLength &&
          entry.token.size() <= normserve::kMaxTokenLength);
    for (char c : entry.token) Check(Printable(c));
    Check(seen.insert(entry.token).second);
    rewritten += std::string(normserve::ScopeName(entry.scope)) + " " + entry.token + "\n";
  }
  // The canonical form of what was read reads back the same.
  std::vector<normserve::TokenEntry> again;
  Check(normserve::ParseTokensFile(rewritten, &again, &error));
  Check(again.size() == tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    Check(again[i].scope == tokens[i].scope && again[i].token == tokens[i].token);
  }
}

void CheckBearer(std::string_view header) {
  bool expected = header.size() > 7 && header[6] == ' ';
  for (size_t i = 0; expected && i < 6; ++i) {
    expected = "bearer"[i] == header[i] || "BEARER"[i] == header[i];
  }
  for (size_t i = 7; expected && i < header.size(); ++i) expected = Printable(header[i]);
  std::string_view token;
  const bool parsed = normserve::ParseBearer(header, &token);
  Check(parsed == expected);
  if (parsed) Check(token == header.substr(7));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckTokensFile(input);
  CheckBearer(input);
  const std::string_view first = input.substr(0, size / 2);
  const std::string_view second = input.substr(size / 2);
  Check(normserve::ConstantTimeEquals(first, second) == (first == second));
  Check(normserve::ConstantTimeEquals(input, input));
  return 0;
}
