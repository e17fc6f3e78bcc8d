#include "server/names.h"

#include <algorithm>
#include <cctype>

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
  const size_t end = Utf8CutBefore(input, kQuotedBytes);
  std::string out = "'" + EscapeUnprintable(input.substr(0, end), "'\\") + "'";
  if (end < input.size()) out += "... (" + std::to_string(input.size()) + " bytes)";
  return out;
}

}  // namespace normserve
