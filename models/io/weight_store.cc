#include "models/io/weight_store.h"

#include <sstream>

#include "models/errors.h"

namespace normserve {
namespace {

std::string ShapeString(at::IntArrayRef shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

}  // namespace

WeightStore::WeightStore(std::string source, std::map<std::string, at::Tensor> tensors)
    : source_(std::move(source)), tensors_(std::move(tensors)) {}

WeightStore::WeightStore(std::string source, Generator generator)
    : source_(std::move(source)), generator_(std::move(generator)) {}

bool WeightStore::Has(const std::string& name) const { return tensors_.count(name) > 0; }

const at::Tensor& WeightStore::Find(const std::string& name, at::IntArrayRef shape_if_generated) {
  auto it = tensors_.find(name);
  if (it == tensors_.end() && generator_) {
    it = tensors_.emplace(name, generator_(name, shape_if_generated)).first;
  }
  if (it == tensors_.end()) {
    throw ModelLoadError(source_ + ": missing tensor '" + name + "'");
  }
  taken_.insert(name);
  return it->second;
}

at::Tensor WeightStore::Take(const std::string& name, const std::vector<int64_t>& shape) {
  const at::Tensor& t = Find(name, shape);
  if (t.sizes() != at::IntArrayRef(shape)) {
    throw ModelLoadError(source_ + ": tensor '" + name + "' has shape " + ShapeString(t.sizes()) +
                         ", the config implies " + ShapeString(shape));
  }
  return t;
}

at::Tensor WeightStore::TakeVector(const std::string& name, int64_t numel) {
  const at::Tensor& t = Find(name, {numel});
  if (t.numel() != numel) {
    throw ModelLoadError(source_ + ": tensor '" + name + "' has " + std::to_string(t.numel()) +
                         " elements, the config implies " + std::to_string(numel));
  }
  return t.reshape({numel});
}

int64_t WeightStore::TakenElements() const {
  int64_t total = 0;
  for (const std::string& name : taken_) total += tensors_.at(name).numel();
  return total;
}

void WeightStore::CheckAllTaken() const {
  std::string stray;
  for (const auto& [name, tensor] : tensors_) {
    if (!taken_.count(name)) stray += (stray.empty() ? "'" : ", '") + name + "'";
  }
  if (!stray.empty()) {
    throw ModelLoadError(source_ + ": tensors the config does not use: " + stray);
  }
}

}  // namespace normserve
