// Adam with fairseq's defaults for the Transformer, the inverse-square-root learning-rate
// schedule with linear warm-up, and gradient-norm clipping. Written out on ATen tensors so
// that the optimizer state is plain named tensors that checkpoints store and restore exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace normserve::train {

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW-style) when > 0
};

class Adam {
 public:
  Adam(std::vector<std::pair<std::string, at::Tensor>> parameters, AdamOptions options);

  // One update with learning rate `lr` from the parameters' .grad() (a parameter without a
  // gradient is left alone).
  void Step(double lr);
  void ZeroGrad();

  int64_t steps() const { return steps_; }
  // exp_avg.<name> and exp_avg_sq.<name> for every parameter.
  std::map<std::string, at::Tensor> State() const;
  void LoadState(const std::map<std::string, at::Tensor>& state, int64_t steps);

 private:
  std::vector<std::pair<std::string, at::Tensor>> parameters_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamOptions options_;
  int64_t steps_ = 0;
};

// fairseq's inverse_sqrt: linear warm-up from init_lr to peak over `warmup` updates, then
// peak * sqrt(warmup / step). `step` is the 1-based number of the update about to be made.
double InverseSqrtLearningRate(int64_t step, double peak, int64_t warmup, double init_lr = 1e-7);

// Scales all gradients so that their joint L2 norm is at most max_norm (when max_norm > 0)
// and returns the norm before clipping (infinite or NaN when a gradient is).
double ClipGradNorm(const std::vector<std::pair<std::string, at::Tensor>>& parameters,
                    double max_norm);

}  // namespace normserve::train
