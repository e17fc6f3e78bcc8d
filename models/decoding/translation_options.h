// Decoding options of a Translate request, their defaults and their limits.
#pragma once

#include <cstddef>
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

// The output length bound of a source of `source_tokens` tokens (without </s>), within the
// model's positions.
int64_t MaxOutputTokens(const TranslationOptions& options, size_t source_tokens,
                        int64_t max_positions);

// Throws InvalidInputError naming the option and its allowed range.
void ValidateTranslationOptions(const TranslationOptions& options);

}  // namespace normserve
