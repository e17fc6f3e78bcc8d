// The trainer's LayerNorm, RMSNorm, pRMSNorm and BatchNorm (and PowerNorm's group scaling):
// autograd's gradients with respect to the input, the gain and the bias against central finite
// differences in float64, on inputs with padding.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "models/train/powernorm.h"
#include "models/train/train_norm.h"
#include "tests/train/train_test_util.h"

namespace normserve::train {
namespace {

struct GradCase {
  std::string name;
  NormConfig config;
  bool training = true;
};

NormConfig Make(NormKind kind) {
  NormConfig c;
  c.kind = kind;
  return c;
}

std::vector<GradCase> Cases() {
  std::vector<GradCase> cases;
  cases.push_back({"layernorm", Make(NormKind::kLayerNorm)});
  cases.push_back({"rmsnorm", Make(NormKind::kRMSNorm)});
  NormConfig rms_plain = Make(NormKind::kRMSNorm);
  rms_plain.bias = false;
  rms_plain.eps_inside_sqrt = false;
  rms_plain.eps = 1e-3;
  cases.push_back({"rmsnorm_nobias_eps_outside", rms_plain});
  NormConfig prms = Make(NormKind::kPartialRMSNorm);
  prms.partial = 0.3;  // d = 8: k = ceil(2.4) = 3
  cases.push_back({"prmsnorm_ceil", prms});
  prms.partial_round_up = false;  // k = floor(2.4) = 2
  prms.bias = false;
  cases.push_back({"prmsnorm_floor_nobias", prms});
  cases.push_back({"batchnorm_training", Make(NormKind::kBatchNorm)});
  cases.push_back({"batchnorm_eval", Make(NormKind::kBatchNorm), false});
  return cases;
}

class NormGradientTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(NormGradientTest, MatchesFiniteDifferences) {
  NORMSERVE_TEST_SEED(seed);
  const GradCase& c = GetParam();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t d = 8;
  TensorRegistry registry;
  TrainNorm norm(c.config, d, "n", registry, NormTrainingOptions{}, opts);
  {
    at::NoGradGuard no_grad;  // parameters away from their 1/0 initialization
    for (auto& [name, p] : registry.parameters) p.add_(at::randn(p.sizes(), gen, opts) * 0.3);
    for (auto& [name, b] : registry.buffers) b.add_(at::rand(b.sizes(), gen, opts) * 0.5);
  }
  at::Tensor x = (at::randn({2, 3, d}, gen, opts) * 1.5 + 0.2).requires_grad_(true);
  const at::Tensor mask = at::tensor({1.0, 1.0, 0.0, 1.0, 1.0, 1.0}, opts).view({2, 3});
  const at::Tensor r = at::randn({2, 3, d}, gen, opts);
  const ForwardMode mode{c.training, 1};
  const auto objective = [&](const at::Tensor& input) {
    // Padding rows take no part in the statistics but still carry outputs; weigh only the
    // real ones, as the loss does.
    return (norm.Forward(input, mask, mode) * r * mask.unsqueeze(-1)).sum();
  };
  objective(x).backward();

  std::vector<std::pair<std::string, at::Tensor>> wrt = {{"x", x}};
  for (const auto& p : registry.parameters) wrt.push_back(p);
  const double h = 1e-6;
  for (auto& [name, t] : wrt) {
    ASSERT_TRUE(t.grad().defined()) << name;
    const at::Tensor analytic = t.grad().clone();
    const at::Tensor flat = t.detach().view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double saved = flat[i].item<double>();
      double plus = 0, minus = 0;
      {
        at::NoGradGuard no_grad;
        flat[i] = saved + h;
        plus = objective(x.detach()).item<double>();
        flat[i] = saved - h;
        minus = objective(x.detach()).item<double>();
        flat[i] = saved;
      }
      const double numeric = (plus - minus) / (2 * h);
      const double got = analytic.view({-1})[i].item<double>();
      EXPECT_NEAR(got, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << c.name << ": d/d" << name << "[" << i << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, NormGradientTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(NormGradientTest, BatchNormStatisticsSkipPadding) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  TensorRegistry registry;
  NormTrainingOptions options;
  options.batchnorm_momentum = 1.0;  // running = this batch's statistics
  TrainNorm norm(Make(NormKind::kBatchNorm), 2, "n", registry, options, opts);
  const at::Tensor x = at::tensor({1.0, 10.0, 3.0, 30.0, 1000.0, -1000.0}, opts).view({1, 3, 2});
  const at::Tensor mask = at::tensor({1.0, 1.0, 0.0}, opts).view({1, 3});
  const at::Tensor y = norm.Forward(x, mask, ForwardMode{true, 1});
  EXPECT_TRUE(at::allclose(registry.buffers["n.running_mean"], at::tensor({2.0, 20.0}, opts)));
  // Unbiased over the two real tokens.
  EXPECT_TRUE(at::allclose(registry.buffers["n.running_var"], at::tensor({2.0, 200.0}, opts)));
  const double s0 = 1 / std::sqrt(1.0 + 1e-5), s1 = 1 / std::sqrt(100.0 + 1e-5);
  EXPECT_TRUE(at::allclose(y.view({3, 2}).narrow(0, 0, 2),
                           at::tensor({-s0, -10 * s1, s0, 10 * s1}, opts).view({2, 2})));
}

TEST(NormGradientTest, GroupScalingMatchesFiniteDifferences) {
  NORMSERVE_TEST_SEED(seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor x = at::randn({3, 8}, gen, opts).requires_grad_(true);
  const at::Tensor r = at::randn({3, 8}, gen, opts);
  (GroupScale(x, 2, 1e-5) * r).sum().backward();
  const at::Tensor flat = x.detach().view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    at::NoGradGuard no_grad;
    const double saved = flat[i].item<double>();
    flat[i] = saved + 1e-6;
    const double plus = (GroupScale(x.detach(), 2, 1e-5) * r).sum().item<double>();
    flat[i] = saved - 1e-6;
    const double minus = (GroupScale(x.detach(), 2, 1e-5) * r).sum().item<double>();
    flat[i] = saved;
    EXPECT_NEAR(x.grad().view({-1})[i].item<double>(), (plus - minus) / 2e-6, 1e-6);
  }
}

}  // namespace
}  // namespace normserve::train
