// What one model call holds in memory at its peak, estimated from the shapes alone, so that
// the server can refuse a request that can never fit its memory budget at arrival and split
// a large batch into several model calls instead of allocating one huge tensor.
//
// The estimates count LibTorch's float32 tensors of the forward on CPU: the encoder's
// activations and attention scores, the decoder's key/value caches (the self-attention cache
// is doubled while it grows by concatenation), one step's activations and the logits with
// their log-softmax. Phases are added rather than overlapped, so the figures are upper
// estimates. No torch here: the server's request checks use it.
#pragma once

#include <cstdint>

namespace normserve {

struct ModelConfig;

// `sentences` sources of at most `source_tokens` tokens (</s> included), each decoding at
// most `output_tokens` tokens with `beam` beams.
int64_t TranslateMemoryBytes(const ModelConfig& config, int64_t sentences, int64_t source_tokens,
                             int64_t output_tokens, int64_t beam);

// Forced decoding of `sentences` targets of at most `target_tokens` tokens (</s> included);
// source_tokens is 0 for a language model.
int64_t ScoreMemoryBytes(const ModelConfig& config, int64_t sentences, int64_t source_tokens,
                         int64_t target_tokens);

// One Generate stream: the prompt (with the leading </s>) then `new_tokens` steps.
int64_t GenerateMemoryBytes(const ModelConfig& config, int64_t prompt_tokens, int64_t new_tokens);

}  // namespace normserve
