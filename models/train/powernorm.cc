#include "models/train/powernorm.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <stdexcept>
#include <string>

namespace normserve::train {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = weight * z + bias with z = x * inv_forward; the backward is the approximate one.
// Tensors the backward needs but autograd must not track (z, the batch's inverse root, the
// mask) travel in saved_data; nu is updated in place.
class PowerNormFunction : public torch::autograd::Function<PowerNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& inv_forward,
                            const at::Tensor& inv_batch, const at::Tensor& mask,
                            const at::Tensor& nu, double real_rows, double alpha_backward) {
    const at::Tensor z = x * inv_forward;
    ctx->saved_data["z"] = z;
    ctx->saved_data["inv_batch"] = inv_batch;
    ctx->saved_data["mask"] = mask;
    ctx->saved_data["nu"] = nu;
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["real_rows"] = real_rows;
    ctx->saved_data["alpha_backward"] = alpha_backward;
    return at::addcmul(bias, z, weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& gy = grads[0];
    const at::Tensor z = ctx->saved_data["z"].toTensor();
    const at::Tensor inv_batch = ctx->saved_data["inv_batch"].toTensor();
    const at::Tensor mask = ctx->saved_data["mask"].toTensor();  // [M, 1]
    at::Tensor nu = ctx->saved_data["nu"].toTensor();
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const double real_rows = ctx->saved_data["real_rows"].toDouble();
    const double alpha_backward = ctx->saved_data["alpha_backward"].toDouble();

    const at::Tensor g = gy * weight;
    const at::Tensor correction = (z * mask) * nu * (1.0 - alpha_backward);
    const at::Tensor g_hat = g - correction;
    nu.add_((g_hat * z * mask).sum(0) / real_rows);
    const at::Tensor gx = g_hat * inv_batch;
    const at::Tensor gw = (gy * z).sum(0);
    const at::Tensor gb = gy.sum(0);
    return {gx,           gw,           gb,           at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor GroupScale(const at::Tensor& x, int64_t groups, double eps) {
  const int64_t c = x.size(-1);
  if (groups < 1 || c % groups != 0) {
    throw std::invalid_argument("PowerNorm groups (" + std::to_string(groups) +
                                ") must divide the channel count " + std::to_string(c));
  }
  std::vector<int64_t> grouped(x.sizes().begin(), x.sizes().end() - 1);
  grouped.push_back(groups);
  grouped.push_back(c / groups);
  const at::Tensor xg = x.reshape(grouped);
  const at::Tensor ms = xg.pow(2).mean(-1, /*keepdim=*/true);
  return (xg * at::rsqrt(ms + eps)).reshape(x.sizes());
}

at::Tensor PowerNormTrain(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& weight,
                          const at::Tensor& bias, PowerNormBuffers& buffers, double eps,
                          const PowerNormOptions& options, int64_t iteration) {
  TORCH_CHECK(x.dim() == 2, "PowerNormTrain takes rows [M, C]");
  TORCH_CHECK(iteration >= 1, "PowerNorm iterations count from 1");
  const at::Tensor mask_col = mask.defined()
                                  ? mask.to(x.scalar_type()).reshape({x.size(0), 1})
                                  : at::ones({x.size(0), 1}, x.options().requires_grad(false));
  at::Tensor psi2, inv_forward, inv_batch;
  double real_rows = 0;
  {
    at::NoGradGuard no_grad;
    const at::Tensor xd = x.detach();
    real_rows = std::max(1.0, mask_col.sum().item<double>());
    psi2 = (xd * xd * mask_col).sum(0) / real_rows;
    inv_batch = at::rsqrt(psi2 + eps);
    at::Tensor& phi = buffers.running_phi;
    const bool warming_up = iteration <= options.warmup;
    inv_forward = warming_up ? inv_batch : at::rsqrt(phi + eps);
    if (warming_up) {
      // Cumulative average of the warm-up batches' statistics.
      const double k = static_cast<double>(iteration);
      phi.mul_((k - 1) / k).add_(psi2 / k);
    } else {
      phi.mul_(options.alpha_forward).add_(psi2 * (1.0 - options.alpha_forward));
    }
  }
  return PowerNormFunction::apply(x, weight, bias, inv_forward, inv_batch, mask_col, buffers.nu,
                                  real_rows, options.alpha_backward);
}

at::Tensor PowerNormEval(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         const at::Tensor& running_phi, double eps) {
  return at::addcmul(bias, x * at::rsqrt(running_phi + eps), weight);
}

}  // namespace normserve::train
