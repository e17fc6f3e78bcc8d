#include "server/names.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "models/text/utf8.h"

namespace normserve {
namespace {

constexpr size_t kQuotedBytes = 64;

}  // namespace

bool IsValidModelName(std::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

std::string QuoteInput(std::string_view input) {
  size_t end = std::min(input.size(), kQuotedBytes);
  // Back to a character boundary: continuation bytes are 10xxxxxx.
  while (end > 0 && end < input.size() && (static_cast<unsigned char>(input[end]) & 0xC0) == 0x80) {
    --end;
  }
  const std::string_view shown = input.substr(0, end);
  const bool valid = IsValidUtf8(shown);
  std::string out = "'";
  for (char c : shown) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || (!valid && byte >= 0x80) || c == '\'' || c == '\\') {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    } else {
      out += c;
    }
  }
  out += "'";
  if (end < input.size()) out += "... (" + std::to_string(input.size()) + " bytes)";
  return out;
}

}  // namespace normserve
