#include "models/train/optim.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <stdexcept>

namespace normserve::train {

Adam::Adam(std::vector<std::pair<std::string, at::Tensor>> parameters, AdamOptions options)
    : parameters_(std::move(parameters)), options_(options) {
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : parameters_) {
    exp_avg_.push_back(at::zeros_like(p));
    exp_avg_sq_.push_back(at::zeros_like(p));
  }
}

void Adam::Step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double correction1 = 1 - std::pow(b1, static_cast<double>(steps_));
  const double correction2 = 1 - std::pow(b2, static_cast<double>(steps_));
  const double step_size = lr * std::sqrt(correction2) / correction1;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor p = parameters_[i].second;
    const at::Tensor& g = p.grad();
    if (!g.defined()) continue;
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    const at::Tensor denom = exp_avg_sq_[i].sqrt().add_(options_.eps);
    if (options_.weight_decay > 0) p.mul_(1 - lr * options_.weight_decay);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void Adam::ZeroGrad() {
  for (auto& [name, p] : parameters_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

std::map<std::string, at::Tensor> Adam::State() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    out["exp_avg." + parameters_[i].first] = exp_avg_[i];
    out["exp_avg_sq." + parameters_[i].first] = exp_avg_sq_[i];
  }
  return out;
}

void Adam::LoadState(const std::map<std::string, at::Tensor>& state, int64_t steps) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    for (auto [prefix, target] : {std::pair<const char*, at::Tensor*>{"exp_avg.", &exp_avg_[i]},
                                  {"exp_avg_sq.", &exp_avg_sq_[i]}}) {
      const std::string name = prefix + parameters_[i].first;
      const auto it = state.find(name);
      if (it == state.end())
        throw std::runtime_error("checkpoint lacks optimizer state '" + name + "'");
      if (it->second.sizes() != target->sizes()) {
        throw std::runtime_error("optimizer state '" + name + "' has the wrong shape");
      }
      target->copy_(it->second);
    }
  }
  steps_ = steps;
}

double InverseSqrtLearningRate(int64_t step, double peak, int64_t warmup, double init_lr) {
  const auto s = static_cast<double>(std::max<int64_t>(step, 1));
  if (warmup > 0 && step <= warmup) {
    return init_lr + (peak - init_lr) * s / static_cast<double>(warmup);
  }
  return peak * std::sqrt(static_cast<double>(std::max<int64_t>(warmup, 1)) / s);
}

double ClipGradNorm(const std::vector<std::pair<std::string, at::Tensor>>& parameters,
                    double max_norm) {
  at::NoGradGuard no_grad;
  double total = 0;
  for (const auto& [name, p] : parameters) {
    if (!p.grad().defined()) continue;
    const double n = p.grad().norm().item<double>();
    total += n * n;
  }
  total = std::sqrt(total);
  if (max_norm > 0 && std::isfinite(total) && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (const auto& [name, p] : parameters) {
      if (p.grad().defined()) p.mutable_grad().mul_(scale);
    }
  }
  return total;
}

}  // namespace normserve::train
