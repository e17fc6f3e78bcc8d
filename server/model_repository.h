// The model repository on disk (DESIGN.md section 4) and the versions loaded from it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "models/served_model.h"

namespace normserve {

class Metrics;

struct ModelStatus {
  std::string name;
  int64_t version = 0;
  std::string path;
  std::string state;  // READY or FAILED
  std::string error;  // why loading failed
  std::shared_ptr<const ServedModel> model;  // set when READY
};

class ModelRepository {
 public:
  ModelRepository(std::string root, Metrics* metrics);

  // Loads the newest version of every model under the root. A model that fails stays listed
  // as FAILED with its reason; the others serve.
  void LoadAll();

  // The serving version of `name`, or nullptr.
  std::shared_ptr<const ServedModel> Find(const std::string& name) const;
  std::optional<ModelStatus> Get(const std::string& name) const;
  std::vector<ModelStatus> List() const;
  // Names of the models that serve, for NOT_FOUND messages.
  std::string ReadyNames() const;
  size_t ready_count() const;

 private:
  ModelStatus LoadNewest(const std::string& name) const;

  std::string root_;
  Metrics* metrics_;
  mutable std::mutex mutex_;
  std::map<std::string, ModelStatus> models_;
};

}  // namespace normserve
