// libFuzzer target for the request path: the UTF-8 check (models/text/utf8.cc) against an
// independent decoder, then tokenizing valid text with the bundled deen source tokenizer
// through the project's shim (models/text/spm_shim.cc, linked against Debian's
// libsentencepiece). Run with -timeout=2: a slow input is a finding (SentencePiece 0.1.97 is
// quadratic on long runs of characters outside its vocabulary).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "models/text/spm_api.h"
#include "models/text/utf8.h"

#ifndef NORMSERVE_FUZZ_SPM
#error "define NORMSERVE_FUZZ_SPM as the path of the tokenizer to fuzz"
#endif

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// Unicode's table of well-formed byte sequences (Unicode 15, table 3-7): the oracle for
// IsValidUtf8, written as ranges rather than bit arithmetic. Returns the offset of the first
// ill-formed sequence, or npos.
size_t FirstIllFormed(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  const auto in = [](uint8_t b, uint8_t lo, uint8_t hi) { return b >= lo && b <= hi; };
  for (size_t i = 0; i < n;) {
    const uint8_t b0 = s[i];
    const auto at = [&](size_t k) -> int { return i + k < n ? s[i + k] : -1; };
    const auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
      return at(k) >= 0 && in(static_cast<uint8_t>(at(k)), lo, hi);
    };
    size_t len = 0;
    if (b0 <= 0x7F)
      len = 1;
    else if (in(b0, 0xC2, 0xDF) && cont(1))
      len = 2;
    else if (b0 == 0xE0 && cont(1, 0xA0, 0xBF) && cont(2))
      len = 3;
    else if ((in(b0, 0xE1, 0xEC) || in(b0, 0xEE, 0xEF)) && cont(1) && cont(2))
      len = 3;
    else if (b0 == 0xED && cont(1, 0x80, 0x9F) && cont(2))
      len = 3;
    else if (b0 == 0xF0 && cont(1, 0x90, 0xBF) && cont(2) && cont(3))
      len = 4;
    else if (in(b0, 0xF1, 0xF3) && cont(1) && cont(2) && cont(3))
      len = 4;
    else if (b0 == 0xF4 && cont(1, 0x80, 0x8F) && cont(2) && cont(3))
      len = 4;
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

struct Tokenizer {
  const normserve::SpmApi& spm = *normserve_spm_api();
  void* processor = nullptr;
  int pieces = 0;
  Tokenizer() {
    std::string error;
    processor = spm.load(NORMSERVE_FUZZ_SPM, &error);
    Check(processor != nullptr);
    pieces = spm.size(processor);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer tokenizer;
  const std::string text(reinterpret_cast<const char*>(data), size);
  size_t offset = 0;
  const bool valid = normserve::IsValidUtf8(text, &offset);
  const size_t expected = FirstIllFormed(text);
  Check(valid == (expected == std::string_view::npos));
  if (!valid) {
    Check(offset == expected);
    return 0;  // the server answers INVALID_ARGUMENT with this offset; nothing is tokenized
  }
  std::vector<int> ids;
  std::string error;
  if (!tokenizer.spm.encode(tokenizer.processor, text, &ids, &error)) return 0;
  for (int id : ids) Check(id >= 0 && id < tokenizer.pieces);
  std::string decoded;
  if (tokenizer.spm.decode(tokenizer.processor, ids, &decoded, &error)) {
    Check(normserve::IsValidUtf8(decoded));  // replies carry decoded text
  }
  return 0;
}
