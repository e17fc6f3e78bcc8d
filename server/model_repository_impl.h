// The template definitions of ModelRepositoryT (model_repository.h).
#pragma once

#include <algorithm>
#include <filesystem>
#include <set>

#include "models/errors.h"
#include "server/log.h"
#include "server/metrics.h"

namespace normserve {
namespace repository_detail {
namespace fs = std::filesystem;

// Version directories (positive integers) and a fingerprint of their files: names, sizes and
// modification times, so that a copy in progress shows as a change.
inline std::map<int64_t, std::string> ScanVersions(const fs::path& model_dir) {
  std::map<int64_t, std::string> versions;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.empty() || name.size() > 18 ||
        !std::all_of(name.begin(), name.end(), ::isdigit) || std::stoll(name) <= 0) {
      continue;
    }
    std::string fingerprint;
    std::vector<fs::directory_entry> files;
    for (const auto& f : fs::directory_iterator(entry.path(), ec)) files.push_back(f);
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::error_code fe;
      const auto size = f.is_regular_file(fe) ? f.file_size(fe) : 0;
      const auto mtime = f.last_write_time(fe).time_since_epoch().count();
      fingerprint += f.path().filename().string() + ":" + std::to_string(size) + ":" +
                     std::to_string(mtime) + ";";
    }
    versions[std::stoll(name)] = fingerprint;
  }
  return versions;
}

}  // namespace repository_detail

template <typename Model>
bool ModelRepositoryT<Model>::IsValidName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == ".." || name[0] == '.') {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

template <typename Model>
ModelRepositoryT<Model>::ModelRepositoryT(std::string root, BatcherConfig defaults, Loader loader,
                                          Metrics* metrics, BatcherFactory make_batcher,
                                          ReadinessListener on_readiness)
    : root_(std::move(root)),
      defaults_(defaults),
      loader_(std::move(loader)),
      metrics_(metrics),
      make_batcher_(std::move(make_batcher)),
      on_readiness_(std::move(on_readiness)) {}

template <typename Model>
ModelRepositoryT<Model>::~ModelRepositoryT() {
  {
    std::lock_guard<std::mutex> lock(poll_mutex_);
    stop_polling_ = true;
  }
  poll_wake_.notify_all();
  if (poller_.joinable()) poller_.join();
}

template <typename Model>
std::vector<std::string> ModelRepositoryT<Model>::ModelDirectories() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && IsValidName(name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

template <typename Model>
void ModelRepositoryT<Model>::LoadAll() {
  std::error_code ec;
  if (!std::filesystem::is_directory(root_, ec)) {
    throw ModelLoadError(root_ + ": the model repository is not a directory");
  }
  for (const std::string& name : ModelDirectories()) Sync(name, /*settle=*/false);
}

template <typename Model>
void ModelRepositoryT<Model>::StartPolling(std::chrono::milliseconds interval) {
  poller_ = std::thread([this, interval] {
    std::unique_lock<std::mutex> lock(poll_mutex_);
    while (!poll_wake_.wait_for(lock, interval, [this] { return stop_polling_; })) {
      lock.unlock();
      Poll();
      lock.lock();
    }
  });
}

template <typename Model>
void ModelRepositoryT<Model>::Poll() {
  std::set<std::string> names;
  for (const std::string& name : ModelDirectories()) names.insert(name);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [name, entry] : entries_) names.insert(name);
  }
  for (const std::string& name : names) Sync(name, /*settle=*/true);
}

template <typename Model>
std::string ModelRepositoryT<Model>::Load(const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(name);
    if (it != entries_.end()) it->second.unloaded = false;
  }
  const std::string error = Sync(name, /*settle=*/false);
  const auto status = Get(name);
  if (!status) return "model '" + name + "' is not in the repository " + root_;
  if (status->ready_versions.empty()) return error.empty() ? "no loadable version" : error;
  return error;
}

template <typename Model>
bool ModelRepositoryT<Model>::Unload(const std::string& name, std::string* error) {
  std::string group;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      *error = "model '" + name + "' is not loaded";
      return false;
    }
    Entry& entry = it->second;
    for (const auto& [version, v] : entry.ready) {
      if (metrics_)
        metrics_->SetModelReady(name, std::to_string(version), v.model->norm_label(), false);
    }
    entry.ready.clear();
    entry.unloaded = true;
    group = entry.serving.group;
  }
  LogInfo("unloaded " + name);
  NotifyReadiness(name, group, false);
  return true;
}

template <typename Model>
std::shared_ptr<const Model> ModelRepositoryT<Model>::LoadVersion(const std::string& name,
                                                                  int64_t version,
                                                                  const std::string& dir) const {
  const auto start = Clock::now();
  auto model = loader_(dir, name, version);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (metrics_) metrics_->RecordModelLoad(name, seconds);
  LogInfo("loaded " + name + " version " + std::to_string(version) + " (" + model->norm_label() +
          ") from " + dir + " in " + std::to_string(static_cast<int>(seconds * 1000)) + " ms");
  return model;
}

template <typename Model>
std::string ModelRepositoryT<Model>::Sync(const std::string& name, bool settle) {
  std::lock_guard<std::mutex> sync_lock(sync_mutex_);
  const std::filesystem::path model_dir = std::filesystem::path(root_) / name;
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec)) {
    std::string group;
    bool had_versions = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(name);
      if (it == entries_.end()) return "model '" + name + "' is not in the repository " + root_;
      for (const auto& [version, v] : it->second.ready) {
        if (metrics_)
          metrics_->SetModelReady(name, std::to_string(version), v.model->norm_label(), false);
      }
      had_versions = !it->second.ready.empty();
      group = it->second.serving.group;
      entries_.erase(it);
    }
    LogInfo("model " + name + " left the repository; unloaded");
    if (had_versions) NotifyReadiness(name, group, false);
    return "";
  }

  ModelServingConfig serving;
  std::map<int64_t, std::string> present = repository_detail::ScanVersions(model_dir);
  std::vector<int64_t> to_load;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!entries_.count(name) && metrics_) metrics_->DeclareModel(name);
    Entry& entry = entries_[name];
    if (entry.unloaded) return "";
    try {
      serving = LoadModelJson(model_dir.string(), defaults_);
      entry.serving = serving;
    } catch (const ModelLoadError& e) {
      entry.error = e.what();
      if (metrics_) metrics_->RecordModelLoadFailure(name);
      LogError(entry.error);
      return entry.error;
    }
    // Newest first: the versions the policy wants that are not serving these exact files.
    int64_t wanted = 0;
    for (auto it = present.rbegin(); it != present.rend(); ++it) {
      const auto& [version, fingerprint] = *it;
      const auto& specific = serving.versions.specific;
      if (!specific.empty()) {
        if (std::find(specific.begin(), specific.end(), version) == specific.end()) continue;
      } else if (wanted >= serving.versions.latest) {
        break;
      }
      const auto ready = entry.ready.find(version);
      if (ready != entry.ready.end() && ready->second.fingerprint == fingerprint) {
        ++wanted;
        continue;
      }
      const auto failed = entry.failed.find(version);
      if (failed != entry.failed.end() && failed->second == fingerprint) continue;
      const auto seen = entry.seen.find(version);
      if (settle && (seen == entry.seen.end() || seen->second != fingerprint)) continue;
      to_load.push_back(version);
      ++wanted;
    }
    entry.seen = present;
    entry.loading = !to_load.empty();
  }

  std::string error;
  for (int64_t version : to_load) {
    const std::string dir = (model_dir / std::to_string(version)).string();
    std::shared_ptr<const Model> model;
    try {
      model = LoadVersion(name, version, dir);
    } catch (const std::exception& e) {
      error = "version " + std::to_string(version) + ": " + e.what();
      LogError("cannot load " + name + " " + error);
      if (metrics_) metrics_->RecordModelLoadFailure(name);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = entries_[name];
    if (model) {
      entry.ready[version] = {model, present[version]};
      entry.failed.erase(version);
      if (metrics_)
        metrics_->SetModelReady(name, std::to_string(version), model->norm_label(), true);
    } else {
      entry.failed[version] = present[version];
      entry.error = error;
    }
  }

  // Keep what the policy asks for among the versions that serve; a failed newer version
  // leaves the older one in place.
  bool ready = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = entries_[name];
    entry.loading = false;
    std::vector<int64_t> keep;
    for (auto it = entry.ready.rbegin(); it != entry.ready.rend(); ++it) {
      const int64_t version = it->first;
      if (!present.count(version)) continue;
      const auto& specific = serving.versions.specific;
      const bool wanted =
          specific.empty() ? static_cast<int64_t>(keep.size()) < serving.versions.latest
                           : std::find(specific.begin(), specific.end(), version) != specific.end();
      if (wanted) keep.push_back(version);
    }
    for (auto it = entry.ready.begin(); it != entry.ready.end();) {
      if (std::find(keep.begin(), keep.end(), it->first) == keep.end()) {
        LogInfo("retired " + name + " version " + std::to_string(it->first));
        if (metrics_) {
          metrics_->SetModelReady(name, std::to_string(it->first), it->second.model->norm_label(),
                                  false);
        }
        it = entry.ready.erase(it);
      } else {
        ++it;
      }
    }
    // The last failure stays visible until a load succeeds or its files are gone.
    for (auto it = entry.failed.begin(); it != entry.failed.end();) {
      it = present.count(it->first) ? std::next(it) : entry.failed.erase(it);
    }
    if ((!to_load.empty() && error.empty()) || entry.failed.empty()) entry.error.clear();
    ready = !entry.ready.empty();
    if (ready && !entry.batcher) entry.batcher = make_batcher_(name, entry.serving.batching);
    if (!ready && entry.error.empty()) {
      entry.error = present.empty() ? model_dir.string() + ": no version directory (1, 2, ...)"
                                    : "no version matches the version policy";
    }
  }
  NotifyReadiness(name, serving.group, ready);
  return error;
}

template <typename Model>
void ModelRepositoryT<Model>::NotifyReadiness(const std::string& name, const std::string& group,
                                              bool ready) {
  if (!on_readiness_) return;
  on_readiness_(name, ready);
  if (group.empty()) return;
  bool group_ready = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [member, entry] : entries_) {
      group_ready = group_ready || (entry.serving.group == group && !entry.ready.empty());
    }
  }
  on_readiness_(group, group_ready);
}

template <typename Model>
typename ModelRepositoryT<Model>::ServingTarget ModelRepositoryT<Model>::Resolve(
    const std::string& name, int64_t version, LookupError* error, std::string* message) {
  std::lock_guard<std::mutex> lock(mutex_);
  *error = LookupError::kNone;
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    // A variant group: a ready member chosen by weight.
    std::vector<std::pair<const std::string*, double>> members;
    double total = 0;
    for (const auto& [member, entry] : entries_) {
      if (entry.serving.group != name || entry.ready.empty()) continue;
      members.emplace_back(&member, entry.serving.weight);
      total += entry.serving.weight;
    }
    if (members.empty()) {
      *error = LookupError::kUnknown;
      *message = "model '" + name + "' is not served; available models: ";
      std::string names;
      for (const auto& [n, e] : entries_) {
        if (!e.ready.empty()) names += (names.empty() ? "" : ", ") + n;
      }
      *message += names.empty() ? "(none)" : names;
      return {};
    }
    if (version != 0) {
      *error = LookupError::kUnknownVersion;
      *message = "'" + name + "' is a variant group; a version can only be named for a model";
      return {};
    }
    double pick = std::uniform_real_distribution<double>(0, total)(random_);
    for (const auto& [member, weight] : members) {
      pick -= weight;
      if (pick <= 0 || member == members.back().first) {
        it = entries_.find(*member);
        break;
      }
    }
  }
  Entry& entry = it->second;
  if (entry.ready.empty()) {
    *error = LookupError::kNotReady;
    *message = "model '" + it->first + "' has no version ready" +
               (entry.unloaded        ? " (unloaded)"
                : entry.error.empty() ? ""
                                      : ": " + entry.error);
    return {};
  }
  if (version == 0) return {entry.ready.rbegin()->second.model, entry.batcher};
  auto v = entry.ready.find(version);
  if (v == entry.ready.end()) {
    std::string loaded;
    for (const auto& [n, ver] : entry.ready)
      loaded += (loaded.empty() ? "" : ", ") + std::to_string(n);
    *error = LookupError::kUnknownVersion;
    *message = "version " + std::to_string(version) + " of model '" + it->first +
               "' is not loaded; loaded versions: " + loaded;
    return {};
  }
  return {v->second.model, entry.batcher};
}

template <typename Model>
typename ModelRepositoryT<Model>::ModelStatus ModelRepositoryT<Model>::StatusLocked(
    const std::string& name, const Entry& entry) const {
  ModelStatus s;
  s.name = name;
  s.error = entry.error;
  s.group = entry.serving.group;
  for (const auto& [version, v] : entry.ready) s.ready_versions.push_back(version);
  if (!entry.ready.empty()) {
    s.newest = entry.ready.rbegin()->second.model;
    s.path = s.newest->dir();
  }
  s.state = !entry.ready.empty() ? "READY"
            : entry.loading      ? "LOADING"
            : entry.unloaded     ? "UNLOADED"
                                 : "UNAVAILABLE";
  return s;
}

template <typename Model>
std::vector<typename ModelRepositoryT<Model>::ModelStatus> ModelRepositoryT<Model>::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModelStatus> out;
  for (const auto& [name, entry] : entries_) out.push_back(StatusLocked(name, entry));
  return out;
}

template <typename Model>
std::optional<typename ModelRepositoryT<Model>::ModelStatus> ModelRepositoryT<Model>::Get(
    const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  return StatusLocked(name, it->second);
}

template <typename Model>
std::string ModelRepositoryT<Model>::ReadyNames() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::set<std::string> names;
  for (const auto& [name, entry] : entries_) {
    if (entry.ready.empty()) continue;
    names.insert(name);
    if (!entry.serving.group.empty()) names.insert(entry.serving.group + " (group)");
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(none)" : out;
}

template <typename Model>
size_t ModelRepositoryT<Model>::ready_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return std::count_if(entries_.begin(), entries_.end(),
                       [](const auto& e) { return !e.second.ready.empty(); });
}

template <typename Model>
std::vector<std::shared_ptr<Batcher>> ModelRepositoryT<Model>::batchers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::shared_ptr<Batcher>> out;
  for (const auto& [name, entry] : entries_) {
    if (entry.batcher) out.push_back(entry.batcher);
  }
  return out;
}

}  // namespace normserve
