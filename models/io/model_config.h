// config.json of a model version: the architecture and the norm of every site
// (DESIGN.md section 4). No torch: the server and the tools read it too.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/norm/norm_config.h"

namespace normserve {

enum class Architecture { kTransformerMT, kTransformerLM };

// Where a norm sits. The decoder's cross-attention norm takes decoder_self_attn's variant
// unless config.json names decoder_cross_attn itself.
enum class NormSite {
  kEncoderSelfAttn,
  kEncoderFfn,
  kDecoderSelfAttn,
  kDecoderCrossAttn,
  kDecoderFfn,
  kFinal,
};
const char* NormSiteName(NormSite site);

struct SpecialTokens {
  static constexpr int64_t kNone = -1;

  int64_t bos = 0;
  int64_t pad = 1;  // kNone: the model has no <pad> (Llama); only transformer_lm may lack one
  int64_t eos = 2;
  int64_t unk = 3;
  // The decoder's first input: </s> in fairseq's models, <pad> in Marian's, <s> in Llama's.
  int64_t decoder_start = 2;

  // The id that fills batches up to their longest row. Without a <pad>, </s>: padded
  // positions are never attended to nor read, so any id does.
  int64_t padding() const { return pad == kNone ? eos : pad; }
};

// How token positions enter the model.
enum class PositionEncoding {
  kSinusoidal,          // fairseq's: half sines then half cosines, from position pad + 1
  kSinusoidalZeroMean,  // fairseq's minus each row's mean (Pre-LN models converted to RMSNorm)
  kMarianSinusoidal,    // Marian's: its own frequencies, from position 0
  kRotary,              // rotary embeddings of queries and keys (Llama), no position table
};

enum class Activation {
  kReLU,
  kGELU,
  kSiLU,    // Marian's "swish"
  kSwiGLU,  // down(silu(gate(x)) * up(x)): Llama's gated feed-forward
};

// Optional pieces of the tokenization (config.json "tokenizer").
struct TokenizerFiles {
  std::string spm;  // the SentencePiece model
  // A JSON object {piece: id}: model ids of the pieces when they are not SentencePiece's own
  // (Marian's vocab.json, a fairseq dictionary); empty when they are.
  std::string vocab;
};

struct ModelConfig {
  Architecture architecture = Architecture::kTransformerMT;
  int64_t embed_dim = 512;
  int64_t ffn_dim = 2048;
  int64_t attention_heads = 8;
  int64_t encoder_layers = 6;  // transformer_mt only
  int64_t decoder_layers = 6;
  bool normalize_before = true;  // pre-norm; false is the original post-norm Transformer
  Activation activation = Activation::kReLU;
  int64_t max_positions = 1024;                  // tokens per sequence, </s> included
  bool share_all_embeddings = false;             // one table for source, target and output
  bool share_decoder_input_output_embed = true;  // output projection = target embedding
  int64_t source_vocab_size = 0;                 // transformer_mt only
  int64_t target_vocab_size = 0;                 // the LM's vocabulary
  TokenizerFiles source_tokenizer;               // file names inside the version directory
  TokenizerFiles target_tokenizer;
  // tokenizer "language_tags": a leading >>xx<< of a source text is one token of the
  // vocabulary, and such tags are cut from the text before SentencePiece (Marian's rule).
  bool language_tags = false;
  SpecialTokens special;
  std::map<NormSite, NormConfig> norms;  // every site of the architecture
  // config.json "positions": sinusoidal, sinusoidal_zero_mean (what a Pre-LN model converted
  // to RMSNorm needs, models/io/norm_conversion.h), marian_sinusoidal or rotary.
  PositionEncoding positions = PositionEncoding::kSinusoidal;
  double rope_theta = 10000.0;  // rotary only
  // Token embeddings are multiplied by sqrt(embed_dim) (fairseq, Marian) or not (Llama).
  bool scale_embedding = true;
  // Key/value heads of grouped-query attention; attention_heads (plain multi-head) by default.
  int64_t kv_heads = 0;
  // Attention and feed-forward projections have biases (fairseq, Marian) or not (Llama).
  bool linear_bias = true;
  // config.json "residual_dim": the width of the residual stream, which the embeddings, the
  // norms, the sublayers' output projections and the FFN input have; 0 (absent) is
  // embed_dim. embed_dim - 1 is Pre-CRMSNorm's compressed zero-mean stream (every site
  // crmsnorm, zero-mean positions); attention keeps embed_dim (heads * head_dim) channels.
  int64_t residual_dim = 0;
  // config.json "output_bias": the output projection has a bias
  // (decoder.output_projection.bias), as a Pre-CRMSNorm conversion's output layer needs.
  bool output_bias = false;

  bool is_mt() const { return architecture == Architecture::kTransformerMT; }
  int64_t head_dim() const { return embed_dim / attention_heads; }
  int64_t key_value_heads() const { return kv_heads > 0 ? kv_heads : attention_heads; }
  bool zero_mean_positions() const { return positions == PositionEncoding::kSinusoidalZeroMean; }
  int64_t stream_dim() const { return residual_dim > 0 ? residual_dim : embed_dim; }
  const NormConfig& norm(NormSite site) const { return norms.at(site); }
  // The distinct files of its tokenizers (SentencePiece models and vocabularies).
  std::vector<std::string> tokenizer_files() const;
  // The sites this architecture has, in model order.
  std::vector<NormSite> sites() const;
  // The metrics' norm label: the variant, or the distinct variants joined by '+' in site
  // order when the sites differ (e.g. "powernorm+layernorm").
  std::string norm_label() const;
};

// Parses and checks config.json text; throws ModelLoadError naming `source` and the field.
ModelConfig ParseModelConfig(const std::string& json_text, const std::string& source);
ModelConfig LoadModelConfig(const std::string& path);
// The inverse, for the tools that write model directories.
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace normserve
