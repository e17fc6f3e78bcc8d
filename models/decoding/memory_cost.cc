#include "models/decoding/memory_cost.h"

#include "models/io/model_config.h"

namespace normserve {
namespace {

constexpr int64_t kFloatBytes = 4;

// Encoder of `rows` sources of `len` tokens: the output, per layer the residual, q, k, v,
// the attention output and the norm's output (all [rows, len, D]), the scores and their
// softmax ([rows, H, len, len]) and the feed-forward's hidden layer before and after its
// activation ([rows, len, F]). Layers run one after the other, so one layer's transients
// count once.
int64_t EncoderElements(const ModelConfig& c, int64_t rows, int64_t len) {
  if (!c.is_mt() || len == 0) return 0;
  return rows * len * c.embed_dim * 7 + 2 * rows * c.attention_heads * len * len +
         2 * rows * len * c.ffn_dim;
}

// Decoder over `rows` rows after `context` positions, feeding `step` new positions at once,
// attending to `source` encoder positions: the caches of every layer (self-attention keys
// and values twice, for the copy made while it grows; cross-attention keys and values and
// the expanded encoder output), one layer's transients as in the encoder, and the logits of
// the new positions three times (logits, log-softmax, and the candidates or gathered rows).
int64_t DecoderElements(const ModelConfig& c, int64_t rows, int64_t context, int64_t step,
                        int64_t source) {
  const int64_t d = c.embed_dim, layers = c.decoder_layers;
  const int64_t caches =
      layers * 2 * rows * context * d * 2 + layers * 2 * rows * source * d + rows * source * d;
  const int64_t transients = rows * step * d * 8 +
                             2 * rows * c.attention_heads * step * (context + source) +
                             2 * rows * step * c.ffn_dim;
  const int64_t logits = 3 * rows * step * c.target_vocab_size;
  return caches + transients + logits;
}

}  // namespace

int64_t TranslateMemoryBytes(const ModelConfig& config, int64_t sentences, int64_t source_tokens,
                             int64_t output_tokens, int64_t beam) {
  const int64_t rows = sentences * beam;
  // The encoder's output stays while the decoder runs on its beam-expanded copy.
  return kFloatBytes * (EncoderElements(config, sentences, source_tokens) +
                        DecoderElements(config, rows, output_tokens + 1, 1, source_tokens));
}

int64_t ScoreMemoryBytes(const ModelConfig& config, int64_t sentences, int64_t source_tokens,
                         int64_t target_tokens) {
  return kFloatBytes *
         (EncoderElements(config, sentences, source_tokens) +
          DecoderElements(config, sentences, target_tokens, target_tokens, source_tokens));
}

int64_t GenerateMemoryBytes(const ModelConfig& config, int64_t prompt_tokens, int64_t new_tokens) {
  // The prompt runs as one step; each new token after it is a step of one.
  return kFloatBytes * DecoderElements(config, 1, prompt_tokens + new_tokens, prompt_tokens, 0);
}

}  // namespace normserve
