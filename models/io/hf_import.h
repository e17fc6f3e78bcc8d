// `normserve-model import`: a Hugging Face model directory (config.json, model.safetensors or
// its shards with model.safetensors.index.json, and the tokenizer files) becomes a normserve
// version directory that the server loads like any other.
//
// Supported: model_type "marian" (opus-mt: post-norm LayerNorm, Marian's sinusoids, shared
// embeddings, final_logits_bias, decoding from <pad>, source.spm/target.spm with vocab.json
// and >>lang<< tags) and "llama"/"mistral" (pre-norm RMSNorm, rotary positions, SwiGLU,
// grouped-query attention, tied or untied lm_head, SentencePiece tokenizer.model). Anything
// the server would compute differently is refused, naming the field and the value.
#pragma once

#include <optional>
#include <string>

#include "models/io/safetensors.h"

namespace normserve {

struct ImportSummary {
  std::string model_type;  // as config.json names it
  std::string norm_label;  // the imported model's norms, as the metrics label them
  int64_t parameters = 0;
};

// Writes out_dir/config.json, out_dir/model.safetensors (in `dtype`, by default the
// checkpoint's) and the tokenizer files, then loads the result as the server would. Throws
// ModelLoadError (or std::invalid_argument for a dtype) saying what is unsupported.
ImportSummary ImportHuggingFaceModel(const std::string& hf_dir, const std::string& out_dir,
                                     std::optional<safetensors::DType> dtype = {});

}  // namespace normserve
