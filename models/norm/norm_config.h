// Which normalization a norm site uses, and its hyper-parameters (DESIGN.md section 3).
// Plain data, no torch: the config parser and the server use it too.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace normserve {

// kCRMSNorm (Jiang et al., NeurIPS 2023) normalizes a row of d channels that stands for the
// zero-mean row of d + 1 channels whose last one is minus the sum of the others: Pre-CRMSNorm
// models keep their residual stream so (ModelConfig::residual_dim = embed_dim - 1).
enum class NormKind { kLayerNorm, kRMSNorm, kPartialRMSNorm, kPowerNorm, kBatchNorm, kCRMSNorm };

// "layernorm", "rmsnorm", "prmsnorm", "powernorm", "batchnorm", "crmsnorm": the names of
// config.json and of the metrics' norm label.
std::string_view NormKindName(NormKind kind);
std::optional<NormKind> ParseNormKind(std::string_view name);

struct NormConfig {
  NormKind kind = NormKind::kLayerNorm;
  double eps = 1e-5;
  // RMSNorm, pRMSNorm and CRMSNorm may come without a bias; the other kinds always have one.
  bool bias = true;
  // pRMSNorm: the RMS comes from the first k channels, k = ceil(p*d) as in the paper, or
  // floor(p*d) as in the authors' code (partial_round_up = false).
  double partial = 0.0625;
  bool partial_round_up = true;
  // The RMS normalizers divide by sqrt(ms + eps); the RMSNorm authors' code divides by
  // sqrt(ms) + eps. Both are served so that either checkpoint converts exactly.
  bool eps_inside_sqrt = true;
  // PowerNorm: group scaling over `groups` equal channel groups, each divided by
  // sqrt(mean(x^2) + group_eps), before the folded running-phi scale.
  int64_t groups = 1;
  double group_eps = 1e-5;
  // BatchNorm as the PowerNorm authors' fairseq fork has it (MaskSyncBatchNorm): every token
  // is first divided by its root mean square over the channels, sqrt(mean(x^2) + group_eps),
  // and the running statistics apply after that.
  bool layer_scaling = false;
};

// The number of leading channels whose mean square normalizes a pRMSNorm row of size d.
int64_t PartialChannels(const NormConfig& config, int64_t d);

}  // namespace normserve
