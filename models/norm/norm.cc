#include "models/norm/norm.h"

#include <ATen/ATen.h>

#include "models/errors.h"
#include "models/io/weight_store.h"

namespace normserve {
namespace {

bool HasBias(const NormConfig& c) {
  const bool optional = c.kind == NormKind::kRMSNorm || c.kind == NormKind::kPartialRMSNorm ||
                        c.kind == NormKind::kCRMSNorm;
  return !optional || c.bias;
}

}  // namespace

std::vector<std::string> NormTensorNames(const NormConfig& config) {
  std::vector<std::string> names = {"weight"};
  if (HasBias(config)) names.push_back("bias");
  if (config.kind == NormKind::kBatchNorm) {
    names.push_back("running_mean");
    names.push_back("running_var");
  }
  if (config.kind == NormKind::kPowerNorm) names.push_back("running_phi");
  return names;
}

NormParams FoldNorm(const NormConfig& config, int64_t dim, const NormWeights& w) {
  NormParams p;
  p.kind = config.kind;
  p.eps = static_cast<float>(config.eps);
  p.eps_inside_sqrt = config.eps_inside_sqrt;
  const at::Tensor g = w.weight.to(at::kFloat).reshape({dim});
  p.scale = g;
  if (w.bias.defined()) p.shift = w.bias.to(at::kFloat).reshape({dim});
  switch (config.kind) {
    case NormKind::kLayerNorm:
      p.statistic = RowStatistic::kMeanVariance;
      break;
    case NormKind::kRMSNorm:
      p.statistic = RowStatistic::kMeanSquare;
      p.stat_channels = dim;
      break;
    case NormKind::kPartialRMSNorm:
      p.statistic = RowStatistic::kMeanSquare;
      p.stat_channels = PartialChannels(config, dim);
      break;
    case NormKind::kCRMSNorm:
      p.statistic = RowStatistic::kCompressedMeanSquare;
      break;
    case NormKind::kPowerNorm: {
      if (config.groups < 1 || dim % config.groups != 0) {
        throw ModelLoadError("PowerNorm groups (" + std::to_string(config.groups) +
                             ") must divide the hidden size " + std::to_string(dim));
      }
      p.statistic = RowStatistic::kGroupMeanSquare;
      p.groups = config.groups;
      p.eps = static_cast<float>(config.group_eps);
      p.eps_inside_sqrt = true;
      const at::Tensor phi = w.running_phi.to(at::kDouble).reshape({dim});
      p.scale = (g.to(at::kDouble) * at::rsqrt(phi + config.eps)).to(at::kFloat);
      break;
    }
    case NormKind::kBatchNorm: {
      p.statistic = RowStatistic::kNone;
      if (config.layer_scaling) {  // the PowerNorm fork's: one group's mean square first
        p.statistic = RowStatistic::kGroupMeanSquare;
        p.groups = 1;
        p.eps = static_cast<float>(config.group_eps);
        p.eps_inside_sqrt = true;
      }
      const at::Tensor var = w.running_var.to(at::kDouble).reshape({dim});
      const at::Tensor mean = w.running_mean.to(at::kDouble).reshape({dim});
      const at::Tensor scale = g.to(at::kDouble) * at::rsqrt(var + config.eps);
      p.scale = scale.to(at::kFloat);
      p.shift = (w.bias.to(at::kDouble).reshape({dim}) - mean * scale).to(at::kFloat);
      break;
    }
  }
  p.scale = p.scale.contiguous();
  if (p.shift.defined()) p.shift = p.shift.contiguous();
  return p;
}

Norm::Norm(const NormConfig& config, int64_t dim, WeightStore& store, const std::string& prefix)
    : kind_(config.kind) {
  NormWeights w;
  for (const std::string& name : NormTensorNames(config)) {
    const at::Tensor t = store.TakeVector(prefix + "." + name, dim);
    if (name == "weight") w.weight = t;
    if (name == "bias") w.bias = t;
    if (name == "running_mean") w.running_mean = t;
    if (name == "running_var") w.running_var = t;
    if (name == "running_phi") w.running_phi = t;
  }
  // Training frameworks store a step counter beside BatchNorm's statistics; inference
  // has no use for it.
  if (store.Has(prefix + ".num_batches_tracked")) store.Take(prefix + ".num_batches_tracked", {});
  params_ = FoldNorm(config, dim, w);
}

void Norm::To(const at::Device& device) {
  if (!params_.scale.defined()) return;  // a site this architecture does not have
  params_.scale = params_.scale.to(device);
  if (params_.shift.defined()) params_.shift = params_.shift.to(device);
}

}  // namespace normserve
