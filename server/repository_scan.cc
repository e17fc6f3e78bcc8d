#include "server/repository_scan.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "models/errors.h"
#include "models/text/utf8.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

// A positive decimal that fits int64_t, or 0.
int64_t VersionNumber(const std::string& name) {
  if (name.empty() || name.size() > 18 || !std::all_of(name.begin(), name.end(), ::isdigit)) {
    return 0;
  }
  return std::stoll(name);
}

std::string Fingerprint(const fs::path& version_dir) {
  std::error_code ec;
  std::vector<fs::directory_entry> files;
  for (const auto& f : fs::directory_iterator(version_dir, ec)) files.push_back(f);
  std::sort(files.begin(), files.end());
  std::string fingerprint;
  for (const auto& f : files) {
    std::error_code fe;
    const auto size = f.is_regular_file(fe) ? f.file_size(fe) : 0;
    const auto mtime = f.last_write_time(fe).time_since_epoch().count();
    fingerprint += f.path().filename().string() + ":" + std::to_string(size) + ":" +
                   std::to_string(mtime) + ";";
  }
  return fingerprint;
}

}  // namespace

ModelScan ScanModel(const std::string& root, const std::string& name,
                    const BatcherConfig& defaults) {
  ModelScan scan;
  const fs::path model_dir = fs::path(root) / name;
  std::error_code ec;
  if (!IsValidModelName(name) || !fs::is_directory(model_dir, ec)) return scan;
  scan.present = true;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    const int64_t version = VersionNumber(entry.path().filename().string());
    std::error_code de;
    if (version > 0 && entry.is_directory(de)) scan.versions[version] = Fingerprint(entry.path());
  }
  try {
    scan.serving = LoadModelJson(model_dir.string(), defaults);
  } catch (const ModelLoadError& e) {
    scan.serving = ModelServingConfig();
    scan.serving.batching = defaults;
    scan.config_error = EscapeUnprintable(e.what());  // a proto string: UTF-8 only
  }
  // The conversion is part of what a loaded version is: changing it reloads every version.
  if (scan.serving.convert_norm) {
    // The target's enum value: this file links without the norm names (norm_config.cc).
    const std::string target = std::to_string(static_cast<int>(*scan.serving.convert_norm));
    for (auto& [version, fingerprint] : scan.versions) {
      fingerprint += "convert_norm:" + target + ";";
    }
  }
  return scan;
}

RepositoryScan ScanRepository(const std::string& root, const BatcherConfig& defaults) {
  RepositoryScan scan;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    std::error_code de;
    if (entry.is_directory(de) && IsValidModelName(name)) {
      scan[name] = ScanModel(root, name, defaults);
    }
  }
  return scan;
}

}  // namespace normserve
