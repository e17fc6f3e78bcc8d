#include "models/train/train_norm.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

namespace normserve::train {
namespace {

bool HasBias(const NormConfig& c) {
  const bool optional = c.kind == NormKind::kRMSNorm || c.kind == NormKind::kPartialRMSNorm;
  return !optional || c.bias;
}

// The mask as a [M, 1] column in x's dtype (ones when undefined).
at::Tensor MaskColumn(const at::Tensor& mask, const at::Tensor& rows) {
  if (!mask.defined()) return at::ones({rows.size(0), 1}, rows.options().requires_grad(false));
  return mask.to(rows.scalar_type()).reshape({rows.size(0), 1});
}

}  // namespace

at::Tensor TensorRegistry::Parameter(const std::string& name, at::Tensor t) {
  t.requires_grad_(true);
  parameters.emplace_back(name, t);
  return t;
}

at::Tensor TensorRegistry::Buffer(const std::string& name, at::Tensor t, bool exported) {
  buffers[name] = t;
  if (exported) exported_buffers.push_back(name);
  return t;
}

TrainNorm::TrainNorm(const NormConfig& config, int64_t dim, const std::string& prefix,
                     TensorRegistry& registry, const NormTrainingOptions& options,
                     const at::TensorOptions& tensor_options)
    : config_(config), options_(options), dim_(dim) {
  weight_ = registry.Parameter(prefix + ".weight", at::ones({dim}, tensor_options));
  if (HasBias(config))
    bias_ = registry.Parameter(prefix + ".bias", at::zeros({dim}, tensor_options));
  if (config.kind == NormKind::kBatchNorm) {
    running_mean_ =
        registry.Buffer(prefix + ".running_mean", at::zeros({dim}, tensor_options), true);
    running_var_ = registry.Buffer(prefix + ".running_var", at::ones({dim}, tensor_options), true);
  }
  if (config.kind == NormKind::kPowerNorm) {
    power_.running_phi =
        registry.Buffer(prefix + ".running_phi", at::ones({dim}, tensor_options), true);
    power_.nu = registry.Buffer(prefix + ".nu", at::zeros({dim}, tensor_options), false);
  }
}

at::Tensor TrainNorm::RmsScale(const at::Tensor& ms) const {
  return config_.eps_inside_sqrt ? at::rsqrt(ms + config_.eps)
                                 : at::reciprocal(at::sqrt(ms) + config_.eps);
}

at::Tensor TrainNorm::Forward(const at::Tensor& x, const at::Tensor& mask,
                              const ForwardMode& mode) {
  const auto affine = [this](const at::Tensor& normalized) {
    return bias_.defined() ? at::addcmul(bias_, normalized, weight_) : normalized * weight_;
  };
  switch (config_.kind) {
    case NormKind::kLayerNorm: {
      const at::Tensor mean = x.mean(-1, /*keepdim=*/true);
      const at::Tensor centered = x - mean;
      const at::Tensor var = centered.pow(2).mean(-1, /*keepdim=*/true);
      return affine(centered * RmsScale(var));
    }
    case NormKind::kRMSNorm:
    case NormKind::kPartialRMSNorm: {
      const int64_t k = config_.kind == NormKind::kRMSNorm ? dim_ : PartialChannels(config_, dim_);
      const at::Tensor head = k == dim_ ? x : x.narrow(-1, 0, k);
      const at::Tensor ms = head.pow(2).mean(-1, /*keepdim=*/true);
      return affine(x * RmsScale(ms));
    }
    case NormKind::kBatchNorm: {
      if (!mode.training) {
        return affine((x - running_mean_) * at::rsqrt(running_var_ + config_.eps));
      }
      const at::Tensor rows = x.reshape({-1, dim_});
      const at::Tensor m = MaskColumn(mask, rows);
      double n = 0;
      {
        at::NoGradGuard no_grad;
        n = std::max(1.0, m.sum().item<double>());
      }
      const at::Tensor mean = (rows * m).sum(0) / n;
      const at::Tensor centered = rows - mean;
      const at::Tensor var = (centered.pow(2) * m).sum(0) / n;
      {
        at::NoGradGuard no_grad;
        const double mom = options_.batchnorm_momentum;
        const double unbiased = n > 1 ? n / (n - 1) : 1.0;
        running_mean_.mul_(1 - mom).add_(mean.detach() * mom);
        running_var_.mul_(1 - mom).add_(var.detach() * (mom * unbiased));
      }
      return affine(centered * at::rsqrt(var + config_.eps)).reshape(x.sizes());
    }
    case NormKind::kPowerNorm: {
      const at::Tensor scaled = GroupScale(x, config_.groups, config_.group_eps);
      if (!mode.training) {
        return PowerNormEval(scaled, weight_, bias_, power_.running_phi, config_.eps);
      }
      const at::Tensor rows = scaled.reshape({-1, dim_});
      const at::Tensor m = mask.defined() ? mask.reshape({-1}) : at::Tensor();
      return PowerNormTrain(rows, m, weight_, bias_, power_, config_.eps, options_.powernorm,
                            mode.iteration)
          .reshape(x.sizes());
    }
  }
  return x;
}

}  // namespace normserve::train
