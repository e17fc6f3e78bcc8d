#include "models/train/checkpoint.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include "models/io/safetensors.h"
#include "models/io/weights_io.h"

namespace normserve::train {
namespace {

constexpr char kModelPrefix[] = "model.";
constexpr char kOptimizerPrefix[] = "optimizer.";
constexpr char kStateKey[] = "normserve_train_state";

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void SaveCheckpoint(const std::string& path, const Checkpoint& checkpoint) {
  std::map<std::string, at::Tensor> keep;  // the float32 copies the views point into
  std::map<std::string, safetensors::TensorToWrite> views;
  const auto add = [&](const std::string& prefix, const std::map<std::string, at::Tensor>& m) {
    for (const auto& [name, t] : m) {
      const at::Tensor c = t.detach().to(at::kCPU).to(at::kFloat).contiguous();
      const std::string key = prefix + name;
      keep[key] = c;
      views[key] = {safetensors::DType::kF32,
                    std::vector<int64_t>(c.sizes().begin(), c.sizes().end()), c.data_ptr(),
                    static_cast<size_t>(c.nbytes())};
    }
  };
  add(kModelPrefix, checkpoint.model);
  add(kOptimizerPrefix, checkpoint.optimizer);
  const std::string tmp = path + ".tmp";
  safetensors::Write(tmp, views, {{"format", "pt"}, {kStateKey, checkpoint.state_json}});
  std::filesystem::rename(tmp, path);
}

Checkpoint LoadCheckpoint(const std::string& path) {
  const safetensors::File file = safetensors::File::Open(path);
  const auto it = file.metadata().find(kStateKey);
  if (it == file.metadata().end()) {
    throw std::runtime_error(path + " is not a normserve-train checkpoint (no " +
                             std::string(kStateKey) + " metadata)");
  }
  Checkpoint c;
  c.state_json = it->second;
  for (auto& [name, t] : LoadWeights(path)) {
    if (StartsWith(name, kModelPrefix)) {
      c.model[name.substr(sizeof(kModelPrefix) - 1)] = t;
    } else if (StartsWith(name, kOptimizerPrefix)) {
      c.optimizer[name.substr(sizeof(kOptimizerPrefix) - 1)] = t;
    } else {
      throw std::runtime_error(path + ": unexpected tensor '" + name + "'");
    }
  }
  return c;
}

std::string CheckpointPath(const std::string& dir, int64_t step) {
  return dir + "/checkpoint_" + std::to_string(step) + ".safetensors";
}

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  static const std::regex name("checkpoint_([0-9]{1,18})\\.safetensors");
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    if (entry.is_regular_file() && std::regex_match(file, m, name)) {
      out.emplace_back(std::stoll(m[1].str()), entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::map<std::string, at::Tensor> AverageCheckpoints(const std::vector<std::string>& paths) {
  if (paths.empty()) throw std::runtime_error("no checkpoints to average");
  std::map<std::string, at::Tensor> sum;
  for (const std::string& path : paths) {
    const Checkpoint c = LoadCheckpoint(path);
    if (!sum.empty() && c.model.size() != sum.size()) {
      throw std::runtime_error(path + " holds other tensors than " + paths.front());
    }
    for (const auto& [name, t] : c.model) {
      auto it = sum.find(name);
      if (it == sum.end()) {
        if (&path != &paths.front()) {
          throw std::runtime_error(path + " has tensor '" + name + "' that " + paths.front() +
                                   " lacks");
        }
        sum[name] = t.to(at::kDouble);
      } else {
        it->second.add_(t.to(at::kDouble));
      }
    }
  }
  for (auto& [name, t] : sum) t = (t / static_cast<double>(paths.size())).to(at::kFloat);
  return sum;
}

}  // namespace normserve::train
