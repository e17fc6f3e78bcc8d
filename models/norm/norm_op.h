// The one dispatch point of every normalization: the norm module folds its variant into
// NormParams at load time, and this op computes it on the device the tensor lives on (the fast
// CPU kernels of norm_op_cpu.cc, the CUDA kernels of norm_op_cuda.cu; norm_kernels.h is the
// raw-pointer level below).
//
//   y = (x - mu) * rstd * scale + shift
//
// with mu and rstd taken per row (or per channel group) as `statistic` says. LayerNorm,
// RMSNorm, pRMSNorm, PowerNorm (group scaling, running phi folded into scale) and BatchNorm
// (running statistics folded into scale/shift) are all this one form.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "models/norm/norm_config.h"
#include "models/norm/norm_kernels.h"

namespace normserve {

struct NormParams {
  NormKind kind = NormKind::kLayerNorm;  // the variant: labels the norm timing metric only
  RowStatistic statistic = RowStatistic::kMeanVariance;
  int64_t stat_channels = 0;  // kMeanSquare only; 0 means all channels
  int64_t groups = 1;         // kGroupMeanSquare only; divides the channel count
  float eps = 1e-5f;
  bool eps_inside_sqrt = true;  // 1/sqrt(s + eps), else 1/(sqrt(s) + eps)
  at::Tensor scale;             // [d], float32
  at::Tensor shift;             // [d], float32, or undefined for none
};

// Normalizes the last dimension of x (float32, float16 or bfloat16; statistics in float32).
// Rows may have any stride; the result is contiguous and has x's dtype.
at::Tensor NormForward(const at::Tensor& x, const NormParams& params);

// Fused residual form: residual += x (rounded to the dtype), then returns the norm of the
// updated residual, in one pass over memory. residual is updated in place and must have x's
// shape, dtype and device.
at::Tensor NormForwardResidual(const at::Tensor& x, const at::Tensor& residual,
                               const NormParams& params);

// The same into a caller's output (tests poison it first): y must have x's shape, dtype and
// device, and overlap neither x nor residual; any strides (rows that do not collapse to one
// row stride go through a temporary).
void NormForwardInto(const at::Tensor& x, const NormParams& params, const at::Tensor& y);
void NormForwardResidualInto(const at::Tensor& x, const at::Tensor& residual,
                             const NormParams& params, const at::Tensor& y);

}  // namespace normserve
