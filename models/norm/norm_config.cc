#include "models/norm/norm_config.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace normserve {
namespace {

constexpr std::array<std::pair<NormKind, std::string_view>, 6> kNames = {{
    {NormKind::kLayerNorm, "layernorm"},
    {NormKind::kRMSNorm, "rmsnorm"},
    {NormKind::kPartialRMSNorm, "prmsnorm"},
    {NormKind::kPowerNorm, "powernorm"},
    {NormKind::kBatchNorm, "batchnorm"},
    {NormKind::kCRMSNorm, "crmsnorm"},
}};

}  // namespace

std::string_view NormKindName(NormKind kind) {
  for (const auto& [k, name] : kNames) {
    if (k == kind) return name;
  }
  return "unknown";
}

std::optional<NormKind> ParseNormKind(std::string_view name) {
  for (const auto& [k, known] : kNames) {
    if (known == name) return k;
  }
  return std::nullopt;
}

int64_t PartialChannels(const NormConfig& config, int64_t d) {
  const double exact = config.partial * static_cast<double>(d);
  const auto k =
      static_cast<int64_t>(config.partial_round_up ? std::ceil(exact) : std::floor(exact));
  return std::clamp<int64_t>(k, 1, d);
}

}  // namespace normserve
