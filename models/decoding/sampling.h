// Sampled continuation of a prompt by a transformer_lm: temperature, top-k, top-p (nucleus),
// reproducible from a seed.
#pragma once

#include <ATen/core/Generator.h>

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

// The next token from one row of logits [V] on the host: the most likely one below a tiny
// temperature, else a sample after the top-k and top-p cuts. Returns -1 when the row leaves
// no distribution to sample from (NaN, +inf, or nothing above -inf after masking <pad> and
// <s>): the continuation ends there.
int64_t SampleToken(at::Tensor logits, const SpecialTokens& special, const SamplingOptions& options,
                    at::Generator& generator);
at::Generator MakeSamplingGenerator(uint64_t seed);

// The reference of the step engine's generation (decoding/step_engine.h): one sequence
// decoded on its own.
enum class SamplingStop { kEndOfSequence, kLength, kCallback };

// Feeds </s> + prompt, then samples one token at a time; on_token(id) sees each one and
// returns false to stop. </s> ends the continuation and is not passed on. The caller keeps
// prompt + max_new_tokens within the model's max_positions.
SamplingStop SampleContinuation(const Transformer& model, const std::vector<int64_t>& prompt,
                                const SamplingOptions& options,
                                const std::function<bool(int64_t token)>& on_token);

}  // namespace normserve
