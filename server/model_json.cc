#include "server/model_json.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/errors.h"
#include "models/io/confined_path.h"
#include "models/io/norm_conversion_target.h"
#include "server/names.h"

namespace normserve {
namespace {

using nlohmann::json;

int64_t Integer(const json& root, const char* field, int64_t fallback, int64_t min, int64_t max,
                const std::string& source) {
  if (!root.contains(field)) return fallback;
  const json& v = root[field];
  if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > max) {
    throw ModelLoadError(source + ": '" + field + "' must be an integer in " + std::to_string(min) +
                         ".." + std::to_string(max) + ", got " + v.dump());
  }
  return v.get<int64_t>();
}

}  // namespace

ModelServingConfig ParseModelJson(const std::string& text, const std::string& source,
                                  const BatcherConfig& defaults) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelLoadError(source + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw ModelLoadError(source + ": must be a JSON object");
  static const char* kKnown[] = {"max_batch_size",
                                 "max_batch_tokens",
                                 "max_queue_delay_us",
                                 "max_queue_size",
                                 "priority_levels",
                                 "version_policy",
                                 "group",
                                 "weight",
                                 "description",
                                 "memory_budget_mb",
                                 "convert_norm",
                                 "instances",
                                 "threads",
                                 "shadow"};
  for (const auto& [key, value] : root.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      throw ModelLoadError(source + ": unknown field '" + key + "'");
    }
  }
  ModelServingConfig c;
  BatcherConfig& b = c.batching;
  b = defaults;
  b.instances = static_cast<int>(Integer(root, "instances", b.instances, 1, 64, source));
  b.threads = static_cast<int>(Integer(root, "threads", b.threads, 1, 1024, source));
  b.max_batch_size = Integer(root, "max_batch_size", b.max_batch_size, 1, 1024, source);
  b.max_batch_tokens = Integer(root, "max_batch_tokens", b.max_batch_tokens, 1, 1 << 20, source);
  b.max_queue_delay = std::chrono::microseconds(
      Integer(root, "max_queue_delay_us", b.max_queue_delay.count(), 0, 10'000'000, source));
  b.max_queue_size = Integer(root, "max_queue_size", b.max_queue_size, 1, 1 << 20, source);
  b.priority_levels =
      static_cast<int>(Integer(root, "priority_levels", b.priority_levels, 1, 16, source));
  b.memory_budget_bytes =
      Integer(root, "memory_budget_mb", b.memory_budget_bytes >> 20, 1, 1 << 20, source) << 20;

  if (root.contains("version_policy")) {
    const json& p = root["version_policy"];
    const bool latest = p.is_object() && p.size() == 1 && p.contains("latest");
    const bool specific = p.is_object() && p.size() == 1 && p.contains("specific");
    if (latest) {
      c.versions.latest = Integer(p, "latest", 1, 1, 64, source + " version_policy");
    } else if (specific && p["specific"].is_array() && !p["specific"].empty()) {
      for (const json& v : p["specific"]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 1) {
          throw ModelLoadError(source + ": version_policy.specific must list positive integers");
        }
        c.versions.specific.push_back(v.get<int64_t>());
      }
    } else {
      throw ModelLoadError(source +
                           ": version_policy must be {\"latest\": N} or "
                           "{\"specific\": [v, ...]}");
    }
  }
  if (root.contains("group")) {
    if (!root["group"].is_string() || !IsValidModelName(root["group"].get<std::string>())) {
      throw ModelLoadError(source +
                           ": 'group' must be a name like a model's: 1-128 letters, digits, "
                           "'.', '_' or '-', not starting with '.'");
    }
    c.group = root["group"].get<std::string>();
  }
  if (root.contains("weight")) {
    if (!root["weight"].is_number() || !(root["weight"].get<double>() > 0)) {
      throw ModelLoadError(source + ": 'weight' must be a positive number");
    }
    c.weight = root["weight"].get<double>();
  }
  if (root.contains("shadow")) {
    const json& v = root["shadow"];
    const bool fraction = v.is_object() && v.size() == 1 && v.contains("fraction") &&
                          v["fraction"].is_number() && v["fraction"].get<double>() > 0 &&
                          v["fraction"].get<double>() <= 1;
    if (!fraction) {
      throw ModelLoadError(source +
                           ": 'shadow' must be {\"fraction\": F} with 0 < F <= 1, the share of "
                           "the group's requests copied to this member");
    }
    if (c.group.empty()) {
      throw ModelLoadError(source +
                           ": 'shadow' needs 'group': a shadow member gets copies of its "
                           "variant group's requests");
    }
    c.shadow_fraction = v["fraction"].get<double>();
  }
  if (root.contains("convert_norm")) {
    const json& v = root["convert_norm"];
    if (!v.is_string())
      throw ModelLoadError(source + ": 'convert_norm' must be \"rmsnorm\" or \"crmsnorm\"");
    try {
      c.convert_norm = ParseNormConversionTarget(v.get<std::string>());
    } catch (const std::exception& e) {
      throw ModelLoadError(source + ": 'convert_norm': " + e.what());
    }
  }
  return c;
}

ModelServingConfig LoadModelJson(const std::string& model_dir, const BatcherConfig& defaults) {
  const std::string path = ConfinedFile(model_dir, "model.json");
  if (!std::filesystem::exists(path)) {
    ModelServingConfig c;
    c.batching = defaults;
    return c;
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return ParseModelJson(text.str(), path, defaults);
}

}  // namespace normserve
