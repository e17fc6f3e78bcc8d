// Sampled continuation of a prompt by a transformer_lm: temperature, top-k, top-p (nucleus),
// reproducible from a seed.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/transformer/transformer.h"

namespace normserve {

struct SamplingOptions {
  double temperature = 1.0;  // 0 picks the most likely token (greedy)
  int64_t top_k = 0;         // 0: no top-k cut
  double top_p = 1.0;        // 1: no nucleus cut
  uint64_t seed = 0;
  int64_t max_new_tokens = 32;
};

enum class SamplingStop { kEndOfSequence, kLength, kCallback };

// Feeds </s> + prompt, then samples one token at a time; on_token(id) sees each one and
// returns false to stop. </s> ends the continuation and is not passed on. The caller keeps
// prompt + max_new_tokens within the model's max_positions.
SamplingStop SampleContinuation(const Transformer& model, const std::vector<int64_t>& prompt,
                                const SamplingOptions& options,
                                const std::function<bool(int64_t token)>& on_token);

}  // namespace normserve
