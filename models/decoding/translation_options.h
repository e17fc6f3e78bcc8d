// Decoding options of a Translate request, their defaults and their limits.
#pragma once

#include <cstdint>

namespace normserve {

struct TranslationOptions {
  static constexpr int64_t kMaxBeamSize = 64;
  static constexpr double kMaxLengthPenalty = 10.0;
  static constexpr double kMaxLengthA = 10.0;
  static constexpr int64_t kMaxLengthB = 4096;

  int64_t beam_size = 4;
  int64_t n_best = 1;
  double length_penalty = 1.0;
  double max_length_a = 1.5;  // output tokens <= a * source tokens + b
  int64_t max_length_b = 10;
  bool return_tokens = false;
};

// Throws InvalidInputError naming the option and its allowed range.
void ValidateTranslationOptions(const TranslationOptions& options);

}  // namespace normserve
