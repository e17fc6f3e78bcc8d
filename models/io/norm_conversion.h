// Lossless conversion of a Pre-LN Transformer into its Pre-RMSNorm or Pre-CRMSNorm equivalent
// (Jiang et al., NeurIPS 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers"). LayerNorm(x) equals
// RMSNorm(x) with the same gain, bias and eps when x has zero mean over its channels, so the
// conversion makes the residual stream zero-mean by recentring what writes to it:
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
//
// Pre-CRMSNorm then stores the zero-mean stream of d = embed_dim channels in its first d - 1
// (the last is minus their sum; config "residual_dim": d - 1):
//   - the token tables, the positions (cut at load) and each sublayer's output projection
//     keep their first d - 1 rows or channels;
//   - every norm becomes crmsnorm with gain 1 and no bias: its mean square over d - 1
//     channels plus the square of their sum, divided by d, is RMSNorm's over d;
//   - every linear that reads a norm's output absorbs that norm's gain and bias and the
//     dropped channel: W[:, i] g_i - W[:, d-1] g_{d-1} for i < d - 1, bias c + W b. These
//     are the q, k and v projections after each self-attention norm, the cross-attention's
//     query after its norm, every decoder layer's cross-attention keys and values after the
//     encoder's final norm, fc1 after each FFN norm, and the output layer after the decoder's
//     final norm, which gets a bias (config "output_bias") for W b.
// Attention keeps its d channels (heads * head_dim). Used by `normserve-model convert` and by
// model.json's "convert_norm" at load.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>

#include "models/io/model_config.h"
#include "models/io/norm_conversion_target.h"
#include "models/io/safetensors.h"

namespace normserve {

// Why `config` has no lossless Pre-RMSNorm (nor Pre-CRMSNorm) equivalent (post-norm, or a
// site that is not LayerNorm, named with its variant), and what to convert instead; "" when it
// has one.
std::string NormConversionRefusal(const ModelConfig& config);

// Returns the converted config and rewrites `weights` (fairseq names, as LoadWeights gives
// them) in place. `target` is kRMSNorm or kCRMSNorm. Throws ModelLoadError naming `source`
// with the refusal, or with a tensor the config implies and `weights` lacks.
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
