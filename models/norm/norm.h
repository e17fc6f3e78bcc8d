// The norm module of a transformer: one norm site's weights, folded at load into the
// NormParams that the norm op computes.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "models/norm/norm_config.h"
#include "models/norm/norm_op.h"

namespace normserve {

class WeightStore;

// The tensors a norm site stores, as fairseq names them after the site prefix.
struct NormWeights {
  at::Tensor weight;        // g, every kind
  at::Tensor bias;          // b, where the kind has one
  at::Tensor running_mean;  // BatchNorm
  at::Tensor running_var;   // BatchNorm
  at::Tensor running_phi;   // PowerNorm's running quadratic mean
};

// The tensor name suffixes a norm of this config stores ("weight", "bias", ...).
std::vector<std::string> NormTensorNames(const NormConfig& config);

// Folds the stored weights into the op's per-channel scale and shift: PowerNorm's
// g / sqrt(phi + eps), BatchNorm's g / sqrt(var + eps) and b - mean * that.
NormParams FoldNorm(const NormConfig& config, int64_t dim, const NormWeights& weights);

class Norm {
 public:
  Norm() = default;
  Norm(const NormConfig& config, int64_t dim, WeightStore& store, const std::string& prefix);

  at::Tensor operator()(const at::Tensor& x) const { return NormForward(x, params_); }
  // residual += x; returns the norm of the updated residual (one pass on the fast kernels).
  at::Tensor AddAndNormalize(const at::Tensor& x, const at::Tensor& residual) const {
    return NormForwardResidual(x, residual, params_);
  }

  NormKind kind() const { return kind_; }
  void To(const at::Device& device);

 private:
  NormKind kind_ = NormKind::kLayerNorm;
  NormParams params_;
};

}  // namespace normserve
