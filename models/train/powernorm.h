// PowerNorm at training time (Shen et al. 2020; DESIGN.md section 3): group scaling, then the
// quadratic-mean normalization with its running statistic phi, and the paper's approximate
// backpropagation as a custom autograd function. This header is free of the autograd headers;
// powernorm.cc is the one trainer source that includes them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace normserve::train {

struct PowerNormOptions {
  double alpha_forward = 0.9;   // a_f: phi <- a_f*phi + (1-a_f)*psi_B^2 after warm-up
  double alpha_backward = 0.9;  // a_b: g_hat = dL/dy*g - (1-a_b)*nu*z
  int64_t warmup = 4000;        // training forward passes normalized by the batch statistic
};

// x / sqrt(mean over each of `groups` equal channel groups of x^2 + eps), on the last
// dimension. Plain ATen ops, so autograd differentiates it exactly.
at::Tensor GroupScale(const at::Tensor& x, int64_t groups, double eps);

// The running state of one PowerNorm site ([C] each, the parameters' dtype).
struct PowerNormBuffers {
  at::Tensor running_phi;  // the running quadratic mean, exported as `running_phi`
  at::Tensor nu;           // the backward's accumulated mean(g_hat * z); checkpoints only
};

// The training forward on rows x [M, C] (already group-scaled). `mask` [M] is 1 for a real
// token and 0 for padding (undefined: every row is real); the batch statistic
// psi_B^2 = mean over real rows of x^2 per channel. `iteration` is the 1-based count of
// training forward passes of this site: while iteration <= warmup, z = x / sqrt(psi_B^2 + eps)
// and phi becomes the cumulative average of the psi_B^2 seen so far; afterwards
// z = x / sqrt(phi + eps) with phi as it was before this batch, then
// phi <- a_f*phi + (1-a_f)*psi_B^2. Returns y = weight * z + bias.
//
// Backward (the approximate backpropagation), with g = dL/dy * weight:
//   g_hat = g - (1-a_b) * nu * z          (on real rows; padding rows keep g)
//   nu   += mean over real rows of g_hat * z
//   dL/dx = g_hat / sqrt(psi_B^2 + eps)
//   dL/dweight = sum dL/dy * z,  dL/dbias = sum dL/dy
// nu is updated in place during the backward pass.
at::Tensor PowerNormTrain(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight,
                          const at::Tensor& bias, PowerNormBuffers& buffers, double eps,
                          const PowerNormOptions& options, int64_t iteration);

// The inference form on the last dimension of x (already group-scaled):
// weight * x / sqrt(phi + eps) + bias.
at::Tensor PowerNormEval(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& running_phi, double eps);

}  // namespace normserve::train
