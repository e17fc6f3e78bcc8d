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
  int64_t bos = 0;
  int64_t pad = 1;
  int64_t eos = 2;
  int64_t unk = 3;
};

struct ModelConfig {
  Architecture architecture = Architecture::kTransformerMT;
  int64_t embed_dim = 512;
  int64_t ffn_dim = 2048;
  int64_t attention_heads = 8;
  int64_t encoder_layers = 6;  // transformer_mt only
  int64_t decoder_layers = 6;
  bool normalize_before = true;       // pre-norm; false is the original post-norm Transformer
  std::string activation = "relu";    // relu or gelu
  int64_t max_positions = 1024;       // tokens per sequence, </s> included
  bool share_all_embeddings = false;  // one table for source, target and output
  bool share_decoder_input_output_embed = true;  // output projection = target embedding
  int64_t source_vocab_size = 0;                 // transformer_mt only
  int64_t target_vocab_size = 0;                 // the LM's vocabulary
  std::string source_tokenizer;                  // file names inside the version directory
  std::string target_tokenizer;
  SpecialTokens special;
  std::map<NormSite, NormConfig> norms;  // every site of the architecture
  // config.json "positions": "sinusoidal_zero_mean": every sinusoid minus its mean over the
  // channels, as a Pre-LN model converted to RMSNorm needs (models/io/norm_conversion.h).
  bool zero_mean_positions = false;
  // config.json "residual_dim": the width of the residual stream, which the embeddings, the
  // norms, the sublayers' output projections and the FFN input have; 0 (absent) is
  // embed_dim. embed_dim - 1 is Pre-CRMSNorm's compressed zero-mean stream (every site
  // crmsnorm, zero-mean positions); attention keeps embed_dim (heads * head_dim) channels.
  int64_t residual_dim = 0;
  // config.json "output_bias": the output projection has a bias
  // (decoder.output_projection.bias), as a Pre-CRMSNorm conversion's output layer needs.
  bool output_bias = false;

  bool is_mt() const { return architecture == Architecture::kTransformerMT; }
  int64_t stream_dim() const { return residual_dim > 0 ? residual_dim : embed_dim; }
  const NormConfig& norm(NormSite site) const { return norms.at(site); }
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
