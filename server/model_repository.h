// The model lifecycle: which versions of which models serve, loaded from the repository on
// disk (DESIGN.md section 4) at start, by a poll watcher, or by explicit Load/Unload calls.
//
// A new or changed version loads off the serving path and must pass a warm-up inference;
// only then is it swapped in. A version that fails never replaces one that serves, and the
// same broken files are not retried until they change. Requests hold the version they
// resolved, so a swap or an unload never fails a request in flight.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "server/batcher.h"
#include "server/model_json.h"
#include "server/model_repository_fwd.h"

namespace normserve {

class Metrics;

// The lifecycle works on any Model with name(), version(), norm_label() and dir(): the server
// uses ServedModel, the ThreadSanitizer tests a stand-in that needs no LibTorch.
template <typename Model>
struct ModelStatusT {
  std::string name;
  std::string state;  // READY, LOADING, UNAVAILABLE (nothing loadable), UNLOADED
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
};

template <typename Model>
class ModelRepositoryT {
 public:
  using ModelStatus = ModelStatusT<Model>;
  using ServingTarget = ServingTargetT<Model>;
  // Loads one version directory and proves it runs (a warm-up inference); throws on failure.
  using Loader = std::function<std::shared_ptr<const Model>(
      const std::string& dir, const std::string& name, int64_t version)>;
  using BatcherFactory =
      std::function<std::shared_ptr<Batcher>(const std::string& name, const BatcherConfig&)>;
  // Called after a model or group changes readiness (for gRPC health).
  using ReadinessListener = std::function<void(const std::string& name, bool ready)>;
  enum class LookupError { kNone, kInvalidName, kUnknown, kNotReady, kUnknownVersion };

  // metrics may be null.
  ModelRepositoryT(std::string root, BatcherConfig defaults, Loader loader, Metrics* metrics,
                   BatcherFactory make_batcher, ReadinessListener on_readiness = {});
  ~ModelRepositoryT();

  // Loads every model directory now (no settling: the files are taken as they are).
  void LoadAll();
  // Rescans every `interval` on a background thread until destruction.
  void StartPolling(std::chrono::milliseconds interval);
  // One rescan: a version is loaded once its files are unchanged since the previous scan.
  void Poll();

  // Explicit control. Load (re)reads model.json and the versions; it returns the load error,
  // or "" once the policy's versions serve. Unload stops serving new requests at once.
  std::string Load(const std::string& name);
  bool Unload(const std::string& name, std::string* error);

  // A model or variant-group name; version 0 means the newest. On failure, *message says why
  // in words fit for the client.
  ServingTarget Resolve(const std::string& name, int64_t version, LookupError* error,
                        std::string* message);

  std::vector<ModelStatus> List() const;
  std::optional<ModelStatus> Get(const std::string& name) const;
  std::string ReadyNames() const;  // models and groups that serve, for error messages
  size_t ready_count() const;
  // Every batcher, for a graceful stop.
  std::vector<std::shared_ptr<Batcher>> batchers() const;

  // Model names are single directory names inside the repository.
  static bool IsValidName(const std::string& name);

 private:
  struct Version {
    std::shared_ptr<const Model> model;
    std::string fingerprint;
  };
  struct Entry {
    ModelServingConfig serving;
    std::map<int64_t, Version> ready;
    std::map<int64_t, std::string> failed;  // version -> fingerprint of files that failed
    std::map<int64_t, std::string> seen;    // version -> fingerprint at the previous scan
    std::string error;
    bool loading = false;
    bool unloaded = false;
    std::shared_ptr<Batcher> batcher;
  };

  // Brings one model in line with its directory; returns the last load error or "".
  std::string Sync(const std::string& name, bool settle);
  std::shared_ptr<const Model> LoadVersion(const std::string& name, int64_t version,
                                           const std::string& dir) const;
  ModelStatus StatusLocked(const std::string& name, const Entry& entry) const;
  void NotifyReadiness(const std::string& name, const std::string& group, bool ready);
  std::vector<std::string> ModelDirectories() const;

  const std::string root_;
  const BatcherConfig defaults_;
  const Loader loader_;
  Metrics* const metrics_;
  const BatcherFactory make_batcher_;
  const ReadinessListener on_readiness_;

  std::mutex sync_mutex_;  // one Sync at a time (poller and Load calls)
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  std::mt19937_64 random_{std::random_device{}()};

  std::mutex poll_mutex_;
  std::condition_variable poll_wake_;
  bool stop_polling_ = false;
  std::thread poller_;
};

// The server's repository, instantiated in model_repository.cc.
using ModelStatus = ModelRepository::ModelStatus;
using ServingTarget = ModelRepository::ServingTarget;
extern template class ModelRepositoryT<ServedModel>;

// ServedModel::Load onto `device`, followed by a tiny inference through the whole model.
std::shared_ptr<const ServedModel> LoadAndWarmUp(const std::string& dir, const std::string& name,
                                                 int64_t version, const std::string& device);

}  // namespace normserve

#include "server/model_repository_impl.h"
