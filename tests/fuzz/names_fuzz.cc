// libFuzzer target for what the server does with a client's model name before anything
// else (server/names.cc): the name check, and the quoting of the name into an error message,
// which must always be valid UTF-8, short, and free of control characters.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "models/text/utf8.h"
#include "server/names.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const bool valid = normserve::IsValidModelName(input);
  if (valid) {
    Check(!input.empty() && input.size() <= 128 && input[0] != '.');
    Check(input.find('/') == std::string_view::npos);
  }
  const std::string quoted = normserve::QuoteInput(input);
  Check(normserve::IsValidUtf8(quoted));
  // 64 bytes, each at most 4 escaped, the quotes and the length note.
  Check(quoted.size() <= 2 + 64 * 4 + 32);
  for (char c : quoted) Check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  return 0;
}
