#include "server/model_repository.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "models/errors.h"
#include "server/log.h"
#include "server/metrics.h"

namespace normserve {
namespace fs = std::filesystem;

namespace {

// Versions are directories named by a positive integer.
std::vector<int64_t> VersionsNewestFirst(const fs::path& model_dir) {
  std::vector<int64_t> versions;
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.empty() || name.size() > 18 ||
        !std::all_of(name.begin(), name.end(), ::isdigit)) {
      continue;
    }
    const int64_t v = std::stoll(name);
    if (v > 0) versions.push_back(v);
  }
  std::sort(versions.rbegin(), versions.rend());
  return versions;
}

}  // namespace

ModelRepository::ModelRepository(std::string root, Metrics* metrics)
    : root_(std::move(root)), metrics_(metrics) {}

ModelStatus ModelRepository::LoadNewest(const std::string& name) const {
  ModelStatus status;
  status.name = name;
  const fs::path model_dir = fs::path(root_) / name;
  const auto versions = VersionsNewestFirst(model_dir);
  if (versions.empty()) {
    status.state = "FAILED";
    status.error = model_dir.string() + ": no version directory (1, 2, ...)";
    return status;
  }
  status.version = versions.front();
  status.path = (model_dir / std::to_string(status.version)).string();
  const auto start = std::chrono::steady_clock::now();
  try {
    status.model = ServedModel::Load(status.path, name, status.version);
    status.state = "READY";
    if (metrics_) {
      metrics_->RecordModelLoad(
          name, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  } catch (const std::exception& e) {
    status.state = "FAILED";
    status.error = e.what();
  }
  return status;
}

void ModelRepository::LoadAll() {
  std::error_code ec;
  if (!fs::is_directory(root_, ec)) {
    throw ModelLoadError(root_ + ": the model repository is not a directory");
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && !name.empty() && name[0] != '.') names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    ModelStatus status = LoadNewest(name);
    if (status.model) {
      LogInfo("loaded " + name + " version " + std::to_string(status.version) + " (" +
              status.model->norm_label() + ", " + std::to_string(status.model->parameter_count()) +
              " parameters) from " + status.path);
      if (metrics_) {
        metrics_->SetModelReady(name, std::to_string(status.version), status.model->norm_label(),
                                true);
      }
    } else {
      LogError("cannot load " + name + ": " + status.error);
      if (metrics_) metrics_->RecordModelLoadFailure(name);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    models_[name] = std::move(status);
  }
}

std::shared_ptr<const ServedModel> ModelRepository::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.model;
}

std::optional<ModelStatus> ModelRepository::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  if (it == models_.end()) return std::nullopt;
  return it->second;
}

std::vector<ModelStatus> ModelRepository::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModelStatus> out;
  for (const auto& [name, status] : models_) out.push_back(status);
  return out;
}

std::string ModelRepository::ReadyNames() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string names;
  for (const auto& [name, status] : models_) {
    if (status.model) names += (names.empty() ? "" : ", ") + name;
  }
  return names.empty() ? "(none)" : names;
}

size_t ModelRepository::ready_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::count_if(models_.begin(), models_.end(),
                       [](const auto& entry) { return entry.second.model != nullptr; });
}

}  // namespace normserve
