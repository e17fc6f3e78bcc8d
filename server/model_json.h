// model.json: how one model of the repository is served (batching, versions, its variant
// group). Every field is optional; the server's flags give the batching defaults.
//
//   {
//     "max_batch_size": 16, "max_batch_tokens": 4096, "max_queue_delay_us": 2000,
//     "max_queue_size": 256, "priority_levels": 2, "memory_budget_mb": 1024,
//     "version_policy": {"latest": 1}            or {"specific": [1, 3]},
//     "group": "deen", "weight": 1.0             a member of variant group "deen"
//     "convert_norm": "rmsnorm"                  serve every version's lossless Pre-RMSNorm
//                                                equivalent (models/io/norm_conversion.h)
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/norm/norm_config.h"
#include "server/batcher.h"

namespace normserve {

struct VersionPolicy {
  int64_t latest = 1;             // serve the newest N loadable versions...
  std::vector<int64_t> specific;  // ...or exactly these, when not empty
};

struct ModelServingConfig {
  BatcherConfig batching;
  VersionPolicy versions;
  std::string group;  // empty: in no group
  double weight = 1;  // share of the group's traffic
  // Converted at load from the Pre-LN weights on disk; unset: served as stored.
  std::optional<NormKind> convert_norm;
};

// Parses model.json text over `defaults`; throws ModelLoadError naming `source` and the field.
ModelServingConfig ParseModelJson(const std::string& text, const std::string& source,
                                  const BatcherConfig& defaults);

// Reads <model_dir>/model.json, or returns the defaults when there is none.
ModelServingConfig LoadModelJson(const std::string& model_dir, const BatcherConfig& defaults);

}  // namespace normserve
