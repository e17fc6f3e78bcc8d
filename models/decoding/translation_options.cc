#include "models/decoding/translation_options.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "models/errors.h"

namespace normserve {
namespace {

void Require(bool ok, const std::string& message) {
  if (!ok) throw InvalidInputError(message);
}

}  // namespace

void ValidateTranslationOptions(const TranslationOptions& o) {
  using O = TranslationOptions;
  Require(o.beam_size >= 1 && o.beam_size <= O::kMaxBeamSize,
          "beam_size is " + std::to_string(o.beam_size) + "; it must be in 1.." +
              std::to_string(O::kMaxBeamSize));
  Require(o.n_best >= 1 && o.n_best <= o.beam_size, "n_best is " + std::to_string(o.n_best) +
                                                        "; it must be in 1..beam_size (" +
                                                        std::to_string(o.beam_size) + ")");
  Require(std::isfinite(o.length_penalty) && o.length_penalty >= 0 &&
              o.length_penalty <= O::kMaxLengthPenalty,
          "length_penalty is " + std::to_string(o.length_penalty) + "; it must be in 0..10");
  Require(std::isfinite(o.max_length_a) && o.max_length_a >= 0 && o.max_length_a <= O::kMaxLengthA,
          "max_length_a is " + std::to_string(o.max_length_a) + "; it must be in 0..10");
  Require(o.max_length_b >= 0 && o.max_length_b <= O::kMaxLengthB,
          "max_length_b is " + std::to_string(o.max_length_b) + "; it must be in 0..4096");
  Require(o.max_length_a > 0 || o.max_length_b > 0,
          "max_length_a and max_length_b are both 0: the output could not hold a token");
}

int64_t MaxOutputTokens(const TranslationOptions& o, size_t source_tokens, int64_t max_positions) {
  const auto bound = static_cast<int64_t>(o.max_length_a * static_cast<double>(source_tokens + 1)) +
                     o.max_length_b;
  return std::clamp<int64_t>(bound, 1, max_positions - 1);
}

}  // namespace normserve
