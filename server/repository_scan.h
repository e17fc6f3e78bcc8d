// The model repository as it is on disk at one moment (DESIGN.md sections 4 and 10): a pure
// read that returns a value and changes nothing, so the lifecycle can decide from it under its
// lock and the scan can be tested on a temporary directory.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "server/model_json.h"
#include "server/names.h"

namespace normserve {

struct ModelScan {
  bool present = false;  // <root>/<name> is a directory
  // Version directories (positive integers) -> a fingerprint of their files (names, sizes and
  // modification times), so that a copy in progress shows as a change between two scans.
  std::map<int64_t, std::string> versions;
  ModelServingConfig serving;  // model.json, or the defaults when it has none or is broken
  std::string config_error;    // why model.json is broken; empty when it is not
};

// Every model directory of the repository by name; empty when `root` cannot be read.
using RepositoryScan = std::map<std::string, ModelScan>;

ModelScan ScanModel(const std::string& root, const std::string& name,
                    const BatcherConfig& defaults);
RepositoryScan ScanRepository(const std::string& root, const BatcherConfig& defaults);

}  // namespace normserve
