// Lossless conversion of a Pre-LN Transformer into its Pre-RMSNorm equivalent (Jiang et al.,
// NeurIPS 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers"). LayerNorm(x) equals RMSNorm(x)
// with the same gain, bias and eps when x has zero mean over its channels, so the conversion
// makes the residual stream zero-mean by recentring what writes to it:
//   - every row of the token embedding tables (the sqrt(d) scale keeps a zero mean zero);
//   - the sinusoidal positions, which are computed, not stored: the converted config says
//     "positions": "sinusoidal_zero_mean" and the model subtracts each row's mean at load;
//   - each sublayer's output projection (self_attn.out_proj, encoder_attn.out_proj, fc2):
//     W <- (I - 11^T/d) W and b <- b - mean(b), so that its output has zero mean whatever
//     its input.
// The output projection, when tied to the target embedding, is untied and keeps the original
// table: the final norm's output is not zero-mean, so recentred output rows would shift each
// token's logit by its own constant. The encoder's final norm becomes RMSNorm too and gives
// the same states, so the decoder's cross-attention keys and values do not change.
// Used by `normserve-model convert` and by model.json's "convert_norm" at load.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>

#include "models/io/model_config.h"
#include "models/io/norm_conversion_target.h"
#include "models/io/safetensors.h"

namespace normserve {

// Why `config` has no lossless Pre-RMSNorm equivalent (post-norm, or a site that is not
// LayerNorm, named with its variant), and what to convert instead; "" when it has one.
std::string NormConversionRefusal(const ModelConfig& config);

// Returns the converted config and rewrites `weights` (fairseq names, as LoadWeights gives
// them) in place. `target` must be kRMSNorm. Throws ModelLoadError naming `source` with the
// refusal, or with a tensor the config implies and `weights` lacks.
ModelConfig ConvertNorm(const ModelConfig& config, std::map<std::string, at::Tensor>& weights,
                        NormKind target, const std::string& source);

// `normserve-model convert`: writes the converted model of `input_dir` (a model version
// directory) to `output_dir`: the tokenizer files copied, model.safetensors in `dtype` (the
// input's storage dtype when unset), config.json last. The conversion runs in fp32 and
// double; F16/BF16 output rounds the recentred weights again, so only F32 output is exact.
// Refuses an output directory that already holds a model.
void ConvertModelDirectory(const std::string& input_dir, const std::string& output_dir,
                           NormKind target, std::optional<safetensors::DType> dtype = {});

}  // namespace normserve
