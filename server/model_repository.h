// The model lifecycle: which versions of which models serve, loaded from the repository on
// disk (DESIGN.md sections 4 and 10) at start, by a poll watcher, or by explicit Load/Unload.
//
// Scan (repository_scan.h: a pure read of the disk) -> select (version_policy.h: one function
// that decides both what to load and what to retire) -> lifecycle (here: per model a state,
// loads on a small pool, a swap once a version is ready, a retire of what the policy no
// longer selects). A new or changed version must load and pass a warm-up before it serves; a
// version that fails never replaces one that serves, and the same broken files are not
// retried until they change. Requests hold the version they resolved, so a swap or an unload
// never fails a request in flight.
//
// Each model's syncs run one after another, in the order they were asked for; different
// models load side by side on the pool, so one slow model does not hold up the others.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/batcher.h"
#include "server/model_json.h"
#include "server/model_repository_fwd.h"
#include "server/repository_scan.h"
#include "server/worker_pool.h"

namespace normserve {

class Metrics;

// The states of a model, shared with the API (normserve.v1.ModelState).
enum class ModelState {
  kLoading,   // nothing serves yet; a version is loading or its files are still settling
  kReady,     // at least one version serves
  kFailed,    // nothing serves and nothing can load: `error` says why
  kUnloaded,  // stopped by UnloadModel; only LoadModel brings it back
};

// The lifecycle works on any Model with name(), version(), norm_label() and dir(): the server
// uses ServedModel, the ThreadSanitizer tests a stand-in that needs no LibTorch.
template <typename Model>
struct ModelStatusT {
  std::string name;
  ModelState state = ModelState::kLoading;
  std::string error;  // the last load failure, kept while an older version serves
  std::string group;
  std::vector<int64_t> ready_versions;  // oldest first
  std::shared_ptr<const Model> newest;  // the newest ready version
  std::string path;                     // of the newest ready version
};

// What a request runs on: a model version and its model's batcher.
template <typename Model>
struct ServingTargetT {
  std::shared_ptr<const Model> model;
  std::shared_ptr<Batcher> batcher;
  // The shadow members of the request's variant group drawn for it (each with its fraction)
  // that get a copy once it is answered; none when a model was named.
  struct Shadow {
    std::shared_ptr<const Model> model;
    std::shared_ptr<Batcher> batcher;
  };
  std::vector<Shadow> shadows;
};

template <typename Model>
class ModelRepositoryT {
 public:
  using ModelStatus = ModelStatusT<Model>;
  using ServingTarget = ServingTargetT<Model>;
  // Loads one version directory as its model.json says and proves it runs (a warm-up
  // inference); throws on failure.
  using Loader = std::function<std::shared_ptr<const Model>(
      const std::string& dir, const std::string& name, int64_t version,
      const ModelServingConfig& serving)>;
  using BatcherFactory =
      std::function<std::shared_ptr<Batcher>(const std::string& name, const BatcherConfig&)>;
  // Told the readiness of a model or group name after it may have changed (for gRPC health).
  // Calls come one at a time, and the last call for a name carries its current readiness.
  using ReadinessListener = std::function<void(const std::string& name, bool ready)>;
  // Called once with "" when a load brought the policy's versions up, else with the reason.
  using LoadDone = std::function<void(const std::string& error)>;
  enum class LookupError {
    kNone,
    kUnknown,         // no such model or group
    kLoading,         // it will serve soon: worth a retry
    kUnloaded,        // stopped by UnloadModel
    kFailed,          // in the repository, but no version can load
    kUnknownVersion,  // the model serves, not that version
  };

  // How long Unload lets the calls already queued for the model run before it rejects them.
  static constexpr std::chrono::seconds kUnloadDrainGrace{30};

  // metrics may be null.
  ModelRepositoryT(std::string root, BatcherConfig defaults, Loader loader, Metrics* metrics,
                   BatcherFactory make_batcher, ReadinessListener on_readiness = {});
  ~ModelRepositoryT();

  // Loads every model directory now (no settling: the files are taken as they are); returns
  // when all are done. Throws ModelLoadError when the root is not a directory.
  void LoadAll();
  // Rescans every `interval` on a background thread until StopLoading.
  void StartPolling(std::chrono::milliseconds interval);
  // One rescan; returns when its syncs are done. A version loads once its files are
  // unchanged since the previous scan.
  void Poll();

  // Explicit control. Load (re)reads model.json and the versions, even of an unloaded model;
  // `done` runs on a loading thread. Unload stops serving new requests at once, then lets
  // the model's queued calls finish (kUnloadDrainGrace) before it returns; a load of that
  // model still running is discarded when it ends.
  void Load(const std::string& name, LoadDone done);
  std::string Load(const std::string& name);  // Load, waiting for the result
  bool Unload(const std::string& name, std::string* error);

  // Ends polling and loading: a load still queued is answered "shutting down"; returns once
  // no loading thread runs and the readiness listener is no longer called.
  void StopLoading();

  // A model or variant-group name; version 0 means the newest. On failure, *message says why
  // in words fit for the client.
  ServingTarget Resolve(const std::string& name, int64_t version, LookupError* error,
                        std::string* message);

  std::vector<ModelStatus> List() const;
  std::optional<ModelStatus> Get(const std::string& name) const;
  std::string ReadyNames() const;  // models and groups that serve, for error messages
  size_t ready_count() const;
  // Calls the readiness listener for every model and group (the server does once it listens).
  void PublishReadiness();
  // Every batcher, for a graceful stop.
  std::vector<std::shared_ptr<Batcher>> batchers() const;

 private:
  struct Version {
    std::shared_ptr<const Model> model;
    std::string fingerprint;
  };
  // A sync asked for and not yet started; later requests merge into it.
  struct PendingSync {
    ModelScan scan;
    bool settle = true;  // false once an explicit load asks: take the files as they are
    std::vector<LoadDone> done;
  };
  struct Entry {
    bool present = false;  // in the repository at the last sync; absent entries are hidden
    ModelServingConfig serving;
    std::map<int64_t, Version> ready;
    std::map<int64_t, std::string> failed;  // version -> fingerprint of files that failed
    std::map<int64_t, std::string> seen;    // version -> fingerprint at the previous scan
    std::string error;
    bool loading = false;  // a load runs or a wanted version's files are settling
    bool unloaded = false;
    // Bumped by Unload: a load that started under an older generation is thrown away.
    uint64_t generation = 0;
    std::shared_ptr<Batcher> batcher;
    bool syncing = false;  // a pool task runs this model's syncs
    std::optional<PendingSync> pending;
  };
  // The next step of a sync, decided under the lock.
  struct Plan {
    std::vector<int64_t> wanted;  // what the policy selects among serving and loadable
    std::optional<int64_t> load;  // the newest wanted version not serving its current files
    bool settling = false;        // a version the policy would select is still changing
  };

  // Queues a sync of one model behind the ones already asked for.
  // A request (LoadAll, Load) takes the files as they are and undoes an Unload; a poll waits
  // for the files to settle.
  void Enqueue(const std::string& name, ModelScan scan, bool by_request, LoadDone done);
  // A pool task: runs the model's pending syncs until none is left.
  void RunSyncs(const std::string& name);
  // Brings one model in line with its scan; returns what Load reports.
  std::string Sync(const std::string& name, const ModelScan& scan, bool settle);
  std::string RemoveAbsent(const std::string& name);
  Plan PlanLocked(const Entry& entry, const ModelScan& scan, bool settle,
                  const std::map<int64_t, std::string>& previous) const;
  void RetireLocked(const std::string& name, Entry& entry, const std::vector<int64_t>& wanted);
  std::shared_ptr<const Model> LoadVersion(const std::string& name, int64_t version,
                                           const std::string& dir,
                                           const ModelServingConfig& serving) const;
  // Queues a sync of every model in the repository or known; results, when not null, gets
  // one future per sync.
  void SchedulePoll(std::vector<std::future<std::string>>* results);

  // Readiness goes out through one publisher at a time, reading the state as it calls.
  void MarkDirtyLocked(const std::string& name, const std::string& group);
  void Publish();
  bool ReadyLocked(const std::string& name) const;
  std::string ReadyNamesLocked() const;

  ModelStatus StatusLocked(const std::string& name, const Entry& entry) const;

  const std::string root_;
  const BatcherConfig defaults_;
  const Loader loader_;
  Metrics* const metrics_;
  const BatcherFactory make_batcher_;
  const ReadinessListener on_readiness_;

  // Guards entries_, random_, dirty_, publishing_, running_tasks_ and stopping_; never held
  // while loading, stopping a batcher, calling the listener or answering a caller.
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  std::mt19937_64 random_{std::random_device{}()};
  std::set<std::string> dirty_;  // names whose readiness the listener has not been told
  bool publishing_ = false;      // a thread is calling the listener
  int running_tasks_ = 0;        // pool tasks running syncs
  bool stopping_ = false;
  std::condition_variable idle_;  // publishing_ or running_tasks_ went down

  // Guards stop_polling_; the poller waits on poll_wake_.
  std::mutex poll_mutex_;
  std::condition_variable poll_wake_;
  bool stop_polling_ = false;
  std::thread poller_;

  // Last: destroyed first, while what its tasks use still exists.
  WorkerPool loads_{2};
};

// The server's repository, instantiated in model_repository.cc.
using ModelStatus = ModelRepository::ModelStatus;
using ServingTarget = ModelRepository::ServingTarget;
extern template class ModelRepositoryT<ServedModel>;

// ServedModel::Load onto `device`, then one tiny call of every kind the model serves (MT:
// greedy and beam translation, a scored pair; LM: a scored text, a few generated tokens).
// Throws ModelLoadError when any fails or gives a score that is not finite.
std::shared_ptr<const ServedModel> LoadAndWarmUp(const std::string& dir, const std::string& name,
                                                 int64_t version, const std::string& device,
                                                 const ModelServingConfig& serving);

}  // namespace normserve

#include "server/model_repository_impl.h"
