// One norm site at training time: the five variants with their parameters, their running
// statistics and their training-time behaviour (DESIGN.md section 3). The eval-mode forward
// computes what the served norm computes after FoldNorm.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "models/norm/norm_config.h"
#include "models/train/powernorm.h"

namespace normserve::train {

// Where a module keeps its tensors: trainable parameters and buffers by fairseq name.
struct TensorRegistry {
  std::vector<std::pair<std::string, at::Tensor>> parameters;
  // Running statistics: `exported` ones go into model.safetensors (running_mean, running_var,
  // running_phi); the others (PowerNorm's nu) live in checkpoints only.
  std::map<std::string, at::Tensor> buffers;
  std::vector<std::string> exported_buffers;

  // Registers `t` as a trainable parameter (sets requires_grad) and returns it.
  at::Tensor Parameter(const std::string& name, at::Tensor t);
  at::Tensor Buffer(const std::string& name, at::Tensor t, bool exported);
};

// How a forward pass runs.
struct ForwardMode {
  bool training = false;
  // The 1-based training forward-pass count: PowerNorm's warm-up clock.
  int64_t iteration = 0;
};

struct NormTrainingOptions {
  PowerNormOptions powernorm;
  double batchnorm_momentum = 0.1;  // running <- (1-m)*running + m*batch, as torch.nn.BatchNorm
};

class TrainNorm {
 public:
  TrainNorm() = default;
  // Registers `<prefix>.weight` (ones), `<prefix>.bias` (zeros, where the kind has one) and
  // the running statistics (BatchNorm: running_mean 0, running_var 1; PowerNorm:
  // running_phi 1 and nu 0) in the options' dtype.
  TrainNorm(const NormConfig& config, int64_t dim, const std::string& prefix,
            TensorRegistry& registry, const NormTrainingOptions& options,
            const at::TensorOptions& tensor_options);

  // x [..., D]. `mask` has x's leading shape and is 1 on real tokens, 0 on padding (or is
  // undefined: all real); only BatchNorm and PowerNorm read it, in training, to take their
  // batch statistics over the real tokens only. In training BatchNorm and PowerNorm update
  // their running statistics.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& mask, const ForwardMode& mode);

  const NormConfig& config() const { return config_; }

 private:
  at::Tensor RmsScale(const at::Tensor& ms) const;  // 1/sqrt(ms + eps) or 1/(sqrt(ms) + eps)

  NormConfig config_;
  NormTrainingOptions options_;
  int64_t dim_ = 0;
  at::Tensor weight_, bias_;
  at::Tensor running_mean_, running_var_;  // BatchNorm
  PowerNormBuffers power_;                 // PowerNorm
};

}  // namespace normserve::train
