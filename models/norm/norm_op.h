// The one dispatch point of every normalization: the norm module folds its variant into
// NormParams at load time, and this op computes it on the device the tensor lives on.
//
//   y = (x - mu) * rstd * scale + shift
//
// with mu and rstd taken per row (or per channel group) as `statistic` says. LayerNorm,
// RMSNorm, pRMSNorm, PowerNorm (group scaling, running phi folded into scale) and BatchNorm
// (running statistics folded into scale/shift) are all this one form.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace normserve {

enum class RowStatistic {
  kNone,             // BatchNorm: a fixed per-channel affine map
  kMeanVariance,     // LayerNorm
  kMeanSquare,       // (p)RMSNorm: mean of x^2 over the first stat_channels channels
  kGroupMeanSquare,  // PowerNorm: mean of x^2 within each of `groups` channel groups
};

struct NormParams {
  RowStatistic statistic = RowStatistic::kMeanVariance;
  int64_t stat_channels = 0;  // kMeanSquare only; 0 means all channels
  int64_t groups = 1;         // kGroupMeanSquare only; divides the channel count
  float eps = 1e-5f;
  bool eps_inside_sqrt = true;  // 1/sqrt(s + eps), else 1/(sqrt(s) + eps)
  at::Tensor scale;             // [d], float32
  at::Tensor shift;             // [d], float32, or undefined for none
};

// Normalizes the last dimension of x. Rows may have any stride; the result is contiguous
// and has x's dtype.
at::Tensor NormForward(const at::Tensor& x, const NormParams& params);

// Fused residual form: residual += x, then returns NormForward(residual). residual is
// updated in place and must have x's shape and dtype.
at::Tensor NormForwardResidual(const at::Tensor& x, const at::Tensor& residual,
                               const NormParams& params);

}  // namespace normserve
