// The template definitions of ModelRepositoryT (model_repository.h).
#pragma once

#include <algorithm>
#include <filesystem>
#include <future>

#include "models/errors.h"
#include "models/text/utf8.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/version_policy.h"

namespace normserve {
namespace repository_detail {

// A callback that fulfils a future its caller waits on.
inline std::function<void(const std::string&)> Fulfil(
    std::vector<std::future<std::string>>* results) {
  auto promise = std::make_shared<std::promise<std::string>>();
  results->push_back(promise->get_future());
  return [promise](const std::string& error) { promise->set_value(error); };
}

inline void WaitAll(std::vector<std::future<std::string>>& results) {
  for (auto& result : results) result.wait();
}

}  // namespace repository_detail

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
  StopLoading();
}

template <typename Model>
void ModelRepositoryT<Model>::StopLoading() {
  {
    std::lock_guard<std::mutex> lock(poll_mutex_);
    stop_polling_ = true;
  }
  poll_wake_.notify_all();
  if (poller_.joinable()) poller_.join();
  std::unique_lock<std::mutex> lock(mutex_);
  stopping_ = true;
  idle_.wait(lock, [this] { return running_tasks_ == 0 && !publishing_; });
}

template <typename Model>
void ModelRepositoryT<Model>::LoadAll() {
  std::error_code ec;
  if (!std::filesystem::is_directory(root_, ec)) {
    throw ModelLoadError(root_ + ": the model repository is not a directory");
  }
  std::vector<std::future<std::string>> results;
  for (auto& [name, scan] : ScanRepository(root_, defaults_)) {
    Enqueue(name, std::move(scan), /*by_request=*/true, repository_detail::Fulfil(&results));
  }
  repository_detail::WaitAll(results);
}

template <typename Model>
void ModelRepositoryT<Model>::StartPolling(std::chrono::milliseconds interval) {
  poller_ = std::thread([this, interval] {
    std::unique_lock<std::mutex> lock(poll_mutex_);
    while (!poll_wake_.wait_for(lock, interval, [this] { return stop_polling_; })) {
      lock.unlock();
      SchedulePoll(nullptr);  // not waiting: a slow load must not delay the other models
      lock.lock();
    }
  });
}

template <typename Model>
void ModelRepositoryT<Model>::Poll() {
  std::vector<std::future<std::string>> results;
  SchedulePoll(&results);
  repository_detail::WaitAll(results);
}

template <typename Model>
void ModelRepositoryT<Model>::SchedulePoll(std::vector<std::future<std::string>>* results) {
  RepositoryScan scan = ScanRepository(root_, defaults_);
  {
    // Models that left the repository get an absent scan, which unloads them.
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [name, entry] : entries_) {
      if (entry.present) scan.emplace(name, ModelScan{});
    }
  }
  for (auto& [name, model_scan] : scan) {
    Enqueue(name, std::move(model_scan), /*by_request=*/false,
            results ? repository_detail::Fulfil(results) : LoadDone{});
  }
}

template <typename Model>
void ModelRepositoryT<Model>::Load(const std::string& name, LoadDone done) {
  Enqueue(name, ScanModel(root_, name, defaults_), /*by_request=*/true, std::move(done));
}

template <typename Model>
std::string ModelRepositoryT<Model>::Load(const std::string& name) {
  std::vector<std::future<std::string>> results;
  Load(name, repository_detail::Fulfil(&results));
  return results.front().get();
}

template <typename Model>
void ModelRepositoryT<Model>::Enqueue(const std::string& name, ModelScan scan, bool by_request,
                                      LoadDone done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      Entry& entry = entries_[name];
      // A request to load undoes an earlier Unload; an Unload after it wins again.
      if (by_request) {
        entry.unloaded = false;
        entry.loading = true;  // until the sync decides; not "failed" meanwhile
      }
      if (!entry.pending) entry.pending.emplace();
      entry.pending->scan = std::move(scan);
      entry.pending->settle = entry.pending->settle && !by_request;
      if (done) entry.pending->done.push_back(std::move(done));
      if (entry.syncing) return;  // the running task takes it next
      entry.syncing = true;
      ++running_tasks_;
      loads_.Submit([this, name] { RunSyncs(name); });
      return;
    }
  }
  if (done) done("the server is shutting down");
}

template <typename Model>
void ModelRepositoryT<Model>::RunSyncs(const std::string& name) {
  for (;;) {
    std::optional<PendingSync> sync;
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = entries_.find(name);
      sync.swap(it->second.pending);
      stopping = stopping_;
      if (!sync) {
        it->second.syncing = false;
        if (!it->second.present) entries_.erase(it);
        --running_tasks_;
        idle_.notify_all();
        return;
      }
    }
    const std::string result =
        stopping ? "the server is shutting down" : Sync(name, sync->scan, sync->settle);
    for (const LoadDone& done : sync->done) done(result);
  }
}

template <typename Model>
std::string ModelRepositoryT<Model>::Sync(const std::string& name, const ModelScan& scan,
                                          bool settle) {
  if (!scan.present) return RemoveAbsent(name);
  const std::string discarded = "model '" + name + "' was unloaded before its load finished";
  std::map<int64_t, std::string> previous;
  uint64_t generation = 0;
  std::optional<std::string> config_error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = entries_.at(name);
    if (!entry.present && metrics_) metrics_->DeclareModel(name);
    entry.present = true;
    if (entry.unloaded) return discarded;
    previous = std::move(entry.seen);
    entry.seen = scan.versions;
    if (!scan.config_error.empty()) {
      // What serves keeps serving, on its old model.json; the same error is counted once.
      if (entry.error != scan.config_error) {
        entry.error = scan.config_error;
        if (metrics_) metrics_->RecordModelLoadFailure(name);
        LogError(entry.error);
      }
      entry.loading = false;
      MarkDirtyLocked(name, entry.serving.group);
      config_error = entry.error;
    } else {
      if (entry.serving.group != scan.serving.group) MarkDirtyLocked(name, entry.serving.group);
      entry.serving = scan.serving;
      entry.loading = true;
      generation = entry.generation;
    }
  }
  if (config_error) {
    Publish();
    return *config_error;
  }

  // One version per step, newest wanted first; each outcome changes the next plan (a broken
  // version leaves the candidates, so the one below it is planned next).
  std::string error;  // of this sync
  bool loaded = false;
  for (;;) {
    int64_t version = 0;
    std::string fingerprint;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Entry& entry = entries_.at(name);
      if (entry.generation != generation) return discarded;
      const Plan plan = PlanLocked(entry, scan, settle, previous);
      if (!plan.load) {
        RetireLocked(name, entry, plan.wanted);
        // The last failure stays visible until a load succeeds or its files are gone.
        for (auto it = entry.failed.begin(); it != entry.failed.end();) {
          it = scan.versions.count(it->first) ? std::next(it) : entry.failed.erase(it);
        }
        if (error.empty() && (loaded || entry.failed.empty())) entry.error.clear();
        entry.loading = plan.settling;
        if (entry.ready.empty() && entry.error.empty() && !entry.loading) {
          entry.error = scan.versions.empty()
                            ? root_ + "/" + name + ": no version directory (1, 2, ...)"
                            : "no version matches the version policy";
        }
        MarkDirtyLocked(name, entry.serving.group);
        if (!entry.ready.empty()) break;
        if (error.empty()) error = entry.error.empty() ? "no loadable version" : entry.error;
        break;
      }
      version = *plan.load;
      fingerprint = scan.versions.at(version);
    }

    const std::string dir = root_ + "/" + name + "/" + std::to_string(version);
    std::shared_ptr<const Model> model;
    std::string failure;
    try {
      model = LoadVersion(name, version, dir, scan.serving);
    } catch (const std::exception& e) {
      // What a loader quotes from a broken file can be any bytes; GetModel's error is a proto
      // string, which clients refuse to parse unless it is UTF-8.
      failure = "version " + std::to_string(version) + ": " + EscapeUnprintable(e.what());
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Entry& entry = entries_.at(name);
      if (entry.generation != generation) return discarded;  // `model` goes after the lock
      if (model) {
        // Swapped in at once; what the policy no longer wants retires at the end.
        if (metrics_)
          metrics_->SetModelReady(name, std::to_string(version), model->norm_label(), true);
        entry.ready[version] = {std::move(model), fingerprint};
        entry.failed.erase(version);
        if (!entry.batcher) entry.batcher = make_batcher_(name, entry.serving.batching);
        MarkDirtyLocked(name, entry.serving.group);
        loaded = true;
      } else {
        LogError("cannot load " + name + " " + failure);
        if (metrics_) metrics_->RecordModelLoadFailure(name);
        entry.failed[version] = fingerprint;
        entry.error = error = failure;
      }
    }
    Publish();
  }
  Publish();
  return error;
}

template <typename Model>
typename ModelRepositoryT<Model>::Plan ModelRepositoryT<Model>::PlanLocked(
    const Entry& entry, const ModelScan& scan, bool settle,
    const std::map<int64_t, std::string>& previous) const {
  const auto broken = [&](int64_t version, const std::string& fingerprint) {
    const auto failed = entry.failed.find(version);
    return failed != entry.failed.end() && failed->second == fingerprint;
  };
  const auto settled = [&](int64_t version, const std::string& fingerprint) {
    const auto seen = previous.find(version);
    return !settle || (seen != previous.end() && seen->second == fingerprint);
  };
  std::set<int64_t> candidates, settling;
  for (const auto& [version, fingerprint] : scan.versions) {
    if (entry.ready.count(version) ||
        (settled(version, fingerprint) && !broken(version, fingerprint))) {
      candidates.insert(version);
    } else if (!broken(version, fingerprint)) {
      settling.insert(version);
    }
  }
  Plan plan;
  plan.wanted = SelectVersions(entry.serving.versions, candidates);
  for (auto it = plan.wanted.rbegin(); it != plan.wanted.rend() && !plan.load; ++it) {
    const std::string& fingerprint = scan.versions.at(*it);
    const auto ready = entry.ready.find(*it);
    const bool current = ready != entry.ready.end() && ready->second.fingerprint == fingerprint;
    if (!current && !broken(*it, fingerprint) && settled(*it, fingerprint)) plan.load = *it;
  }
  std::set<int64_t> hopeful = candidates;
  hopeful.insert(settling.begin(), settling.end());
  for (int64_t version : SelectVersions(entry.serving.versions, hopeful)) {
    plan.settling = plan.settling || settling.count(version) > 0;
  }
  return plan;
}

template <typename Model>
void ModelRepositoryT<Model>::RetireLocked(const std::string& name, Entry& entry,
                                           const std::vector<int64_t>& wanted) {
  for (auto it = entry.ready.begin(); it != entry.ready.end();) {
    if (std::find(wanted.begin(), wanted.end(), it->first) != wanted.end()) {
      ++it;
      continue;
    }
    LogInfo("retired " + name + " version " + std::to_string(it->first));
    if (metrics_) {
      metrics_->SetModelReady(name, std::to_string(it->first), it->second.model->norm_label(),
                              false);
    }
    it = entry.ready.erase(it);  // requests holding it finish on it
  }
}

template <typename Model>
std::string ModelRepositoryT<Model>::RemoveAbsent(const std::string& name) {
  const std::string absent = "model '" + name + "' is not in the repository";
  std::shared_ptr<Batcher> batcher;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry& entry = entries_.at(name);
    if (!entry.present) return absent;
    for (const auto& [version, v] : entry.ready) {
      if (metrics_)
        metrics_->SetModelReady(name, std::to_string(version), v.model->norm_label(), false);
    }
    MarkDirtyLocked(name, entry.serving.group);
    batcher = std::move(entry.batcher);
    entry.present = false;  // hidden now, and erased once its syncs are done
    entry.ready.clear();
    entry.failed.clear();
    entry.seen.clear();
    entry.error.clear();
    entry.serving = ModelServingConfig();
    entry.loading = entry.unloaded = false;
    ++entry.generation;
  }
  LogInfo("model " + name + " left the repository; unloaded");
  Publish();
  if (batcher) batcher->Stop(kUnloadDrainGrace);
  return absent;
}

template <typename Model>
bool ModelRepositoryT<Model>::Unload(const std::string& name, std::string* error) {
  std::shared_ptr<Batcher> batcher;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(name);
    // A model whose first load is still queued counts: the unload must win over it.
    if (it == entries_.end() || (!it->second.present && !it->second.syncing)) {
      *error = "model '" + name + "' is not in the repository";
      return false;
    }
    Entry& entry = it->second;
    for (const auto& [version, v] : entry.ready) {
      if (metrics_)
        metrics_->SetModelReady(name, std::to_string(version), v.model->norm_label(), false);
    }
    entry.ready.clear();
    entry.unloaded = true;
    entry.loading = false;
    ++entry.generation;
    batcher = std::move(entry.batcher);
    MarkDirtyLocked(name, entry.serving.group);
  }
  LogInfo("unloaded " + name);
  Publish();
  // Off the lock: the calls already queued run, then the batcher's threads end.
  if (batcher) batcher->Stop(kUnloadDrainGrace);
  return true;
}

template <typename Model>
std::shared_ptr<const Model> ModelRepositoryT<Model>::LoadVersion(
    const std::string& name, int64_t version, const std::string& dir,
    const ModelServingConfig& serving) const {
  const auto start = Clock::now();
  auto model = loader_(dir, name, version, serving);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (metrics_) metrics_->RecordModelLoad(name, seconds);
  LogInfo("loaded " + name + " version " + std::to_string(version) + " (" + model->norm_label() +
          ") from " + dir + " in " + std::to_string(static_cast<int>(seconds * 1000)) + " ms");
  return model;
}

template <typename Model>
void ModelRepositoryT<Model>::MarkDirtyLocked(const std::string& name, const std::string& group) {
  dirty_.insert(name);
  if (!group.empty()) dirty_.insert(group);
}

template <typename Model>
void ModelRepositoryT<Model>::Publish() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (publishing_) return;  // that thread will also tell what we marked
  publishing_ = true;
  while (!dirty_.empty() && !stopping_) {
    const std::string name = *dirty_.begin();
    dirty_.erase(dirty_.begin());
    const bool ready = ReadyLocked(name);
    lock.unlock();
    if (on_readiness_) on_readiness_(name, ready);
    lock.lock();
  }
  publishing_ = false;
  idle_.notify_all();
}

template <typename Model>
void ModelRepositoryT<Model>::PublishReadiness() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [name, entry] : entries_) {
      if (entry.present) MarkDirtyLocked(name, entry.serving.group);
    }
  }
  Publish();
}

template <typename Model>
bool ModelRepositoryT<Model>::ReadyLocked(const std::string& name) const {
  for (const auto& [member, entry] : entries_) {
    const bool serves_group = entry.serving.group == name && !entry.serving.shadow_fraction;
    if (entry.present && !entry.ready.empty() && (member == name || serves_group)) return true;
  }
  return false;
}

template <typename Model>
typename ModelRepositoryT<Model>::ServingTarget ModelRepositoryT<Model>::Resolve(
    const std::string& name, int64_t version, LookupError* error, std::string* message) {
  std::lock_guard<std::mutex> lock(mutex_);
  *error = LookupError::kNone;
  // Why a model serves nothing, for the client: retry, load it again, or fix its files.
  const auto not_serving = [&](const std::string& model, const Entry& entry) {
    if (entry.unloaded) {
      *error = LookupError::kUnloaded;
      *message = "model '" + model + "' was unloaded (UnloadModel); LoadModel serves it again";
    } else if (entry.loading) {
      *error = LookupError::kLoading;
      *message = "model '" + model + "' is still loading; retry shortly";
    } else {
      *error = LookupError::kFailed;
      *message = "model '" + model + "' has no version that loads: " + entry.error;
    }
  };
  auto it = entries_.find(name);
  if (it == entries_.end() || !it->second.present) {
    // A variant group: a ready member chosen by weight.
    std::vector<std::pair<const std::string*, double>> members;
    const Entry* hopeful = nullptr;  // a member that is loading, else one that failed
    const std::string* hopeful_name = nullptr;
    double total = 0;
    std::vector<typename ServingTarget::Shadow> shadows;
    for (const auto& [member, entry] : entries_) {
      if (!entry.present || entry.serving.group != name) continue;
      if (entry.serving.shadow_fraction) {
        if (!entry.ready.empty() &&
            std::bernoulli_distribution(*entry.serving.shadow_fraction)(random_)) {
          shadows.push_back({entry.ready.rbegin()->second.model, entry.batcher});
        }
        continue;
      }
      if (!entry.ready.empty()) {
        members.emplace_back(&member, entry.serving.weight);
        total += entry.serving.weight;
      } else if (!hopeful || (entry.loading && !hopeful->loading) ||
                 (hopeful->unloaded && !entry.unloaded)) {
        hopeful = &entry;
        hopeful_name = &member;
      }
    }
    if (members.empty()) {
      if (hopeful) {
        not_serving(*hopeful_name, *hopeful);
        *message = "no member of variant group '" + name + "' serves: " + *message;
      } else {
        *error = LookupError::kUnknown;
        *message = "model '" + name + "' is not served; available: " + ReadyNamesLocked();
      }
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
        const Entry& chosen = entries_.find(*member)->second;
        ServingTarget target{chosen.ready.rbegin()->second.model, chosen.batcher};
        target.shadows = std::move(shadows);
        return target;
      }
    }
  }
  Entry& entry = it->second;
  if (entry.ready.empty()) {
    not_serving(it->first, entry);
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
  s.state = !entry.ready.empty() ? ModelState::kReady
            : entry.unloaded     ? ModelState::kUnloaded
            : entry.loading      ? ModelState::kLoading
                                 : ModelState::kFailed;
  return s;
}

template <typename Model>
std::vector<typename ModelRepositoryT<Model>::ModelStatus> ModelRepositoryT<Model>::List() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModelStatus> out;
  for (const auto& [name, entry] : entries_) {
    if (entry.present) out.push_back(StatusLocked(name, entry));
  }
  return out;
}

template <typename Model>
std::optional<typename ModelRepositoryT<Model>::ModelStatus> ModelRepositoryT<Model>::Get(
    const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(name);
  if (it == entries_.end() || !it->second.present) return std::nullopt;
  return StatusLocked(name, it->second);
}

template <typename Model>
std::string ModelRepositoryT<Model>::ReadyNames() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ReadyNamesLocked();
}

template <typename Model>
std::string ModelRepositoryT<Model>::ReadyNamesLocked() const {
  std::set<std::string> names;
  for (const auto& [name, entry] : entries_) {
    if (!entry.present || entry.ready.empty()) continue;
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
                       [](const auto& e) { return e.second.present && !e.second.ready.empty(); });
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
