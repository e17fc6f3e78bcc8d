// model.json: how one model of the repository is served (batching, versions, its variant
// group). Every field is optional; the server's flags give the batching defaults.
//
//   {
//     "max_batch_size": 16, "max_batch_tokens": 4096, "max_queue_delay_us": 2000,
//     "max_queue_size": 256, "priority_levels": 2, "memory_budget_mb": 1024,
//     "instances": 1, "threads": 1               model instances, intra-op threads of each
//     "version_policy": {"latest": 1}            or {"specific": [1, 3]},
//     "group": "deen", "weight": 1.0             a member of variant group "deen"
//     "shadow": {"fraction": 0.1}                a shadow member of its group: it gets copies
//                                                of that fraction of the group's answered
//                                                requests and none of its traffic
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
  // A shadow member: it takes none of the group's traffic, and copies of `fraction` of the
  // group's requests run on it after they were answered (server/shadow_traffic.h).
  std::optional<double> shadow_fraction;
  // Converted at load from the Pre-LN weights on disk; unset: served as stored.
  std::optional<NormKind> convert_norm;
};

// Parses model.json text over `defaults`; throws ModelLoadError naming `source` and the field.
ModelServingConfig ParseModelJson(const std::string& text, const std::string& source,
                                  const BatcherConfig& defaults);

// Reads <model_dir>/model.json, or returns the defaults when there is none.
ModelServingConfig LoadModelJson(const std::string& model_dir, const BatcherConfig& defaults);

}  // namespace normserve
