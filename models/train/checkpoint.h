// Training checkpoints: one safetensors file per checkpoint holding the model's whole state
// ("model.<name>": parameters, running statistics, PowerNorm's nu), the optimizer's moments
// ("optimizer.<name>") and, in the header's metadata, the trainer's JSON state (step, data
// position, config). Written to a temporary name and renamed, so a crash never leaves half a
// checkpoint under the real name.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace normserve::train {

struct Checkpoint {
  std::map<std::string, at::Tensor> model;
  std::map<std::string, at::Tensor> optimizer;
  std::string state_json;
};

void SaveCheckpoint(const std::string& path, const Checkpoint& checkpoint);
// Throws ModelLoadError (a damaged file) or std::runtime_error (not a checkpoint).
Checkpoint LoadCheckpoint(const std::string& path);

// checkpoint_<step>.safetensors in `dir`, by step.
std::string CheckpointPath(const std::string& dir, int64_t step);
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& dir);

// The element-wise mean of the model tensors of the checkpoints (accumulated in float64).
std::map<std::string, at::Tensor> AverageCheckpoints(const std::vector<std::string>& paths);

}  // namespace normserve::train
