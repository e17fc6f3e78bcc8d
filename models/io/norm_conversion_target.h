// The names a lossless norm conversion accepts (`normserve-model convert --norm`, model.json's
// "convert_norm"). Header only and free of torch: the model.json parser and its fuzz target
// use it without the models library.
#pragma once

#include <stdexcept>
#include <string>

#include "models/norm/norm_config.h"

namespace normserve {

// "rmsnorm" gives kRMSNorm, "crmsnorm" kCRMSNorm; throws std::invalid_argument for any other
// name.
inline NormKind ParseNormConversionTarget(const std::string& name) {
  if (name == "rmsnorm") return NormKind::kRMSNorm;
  if (name == "crmsnorm") return NormKind::kCRMSNorm;
  throw std::invalid_argument("cannot convert to norm '" + name + "'; use rmsnorm or crmsnorm");
}

}  // namespace normserve
