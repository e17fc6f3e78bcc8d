// Named weight tensors of one model, handed out by name and shape while the model is built.
// Every tensor must be claimed: a misspelt or stray name in the file is an error, not noise.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace normserve {

class WeightStore {
 public:
  // Makes the tensor for a name the store lacks (random initialization of new models).
  using Generator = std::function<at::Tensor(const std::string& name, at::IntArrayRef shape)>;

  WeightStore(std::string source, std::map<std::string, at::Tensor> tensors);
  // A store that generates every tensor on first Take().
  WeightStore(std::string source, Generator generator);

  // The tensor `name`, checked to have `shape`; throws ModelLoadError naming both.
  at::Tensor Take(const std::string& name, const std::vector<int64_t>& shape);
  // Take() with any shape whose element count is `numel`, flattened (running stats that
  // other frameworks store as [1, C, 1, 1]).
  at::Tensor TakeVector(const std::string& name, int64_t numel);
  bool Has(const std::string& name) const;
  // Throws if a tensor was never claimed.
  void CheckAllTaken() const;
  // Elements in all tensors taken so far (the model's parameter count).
  int64_t TakenElements() const;

  const std::string& source() const { return source_; }
  const std::map<std::string, at::Tensor>& tensors() const { return tensors_; }

 private:
  const at::Tensor& Find(const std::string& name, at::IntArrayRef shape_if_generated);

  std::string source_;
  std::map<std::string, at::Tensor> tensors_;
  std::set<std::string> taken_;
  Generator generator_;
};

}  // namespace normserve
