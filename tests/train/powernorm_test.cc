// PowerNorm's training behaviour: the approximate backward against the formula computed
// independently here in float64 loops (DESIGN.md section 3), the running phi (cumulative
// average in warm-up, then the exponential average), the warm-up switch of the normalizer,
// and group scaling.
#include "models/train/powernorm.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "models/train/train_norm.h"
#include "tests/train/train_test_util.h"

namespace normserve::train {
namespace {

using Matrix = std::vector<std::vector<double>>;

Matrix ToMatrix(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kDouble).contiguous();
  Matrix m(static_cast<size_t>(c.size(0)), std::vector<double>(static_cast<size_t>(c.size(1))));
  const auto a = c.accessor<double, 2>();
  for (size_t i = 0; i < m.size(); ++i) {
    for (size_t j = 0; j < m[i].size(); ++j) m[i][j] = a[i][j];
  }
  return m;
}

std::vector<double> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

struct Case {
  Matrix x, gy;
  std::vector<double> mask, weight, bias, phi, nu;
};

struct Expected {
  Matrix y, gx;
  std::vector<double> gw, gb, nu, phi;
};

// The formula of DESIGN.md section 3, element by element.
Expected Reference(const Case& c, double eps, double a_f, double a_b, int64_t warmup,
                   int64_t iteration) {
  const size_t m = c.x.size(), ch = c.x[0].size();
  double n = 0;
  for (double v : c.mask) n += v;
  std::vector<double> psi2(ch, 0.0);
  for (size_t i = 0; i < m; ++i) {
    for (size_t j = 0; j < ch; ++j) psi2[j] += c.mask[i] * c.x[i][j] * c.x[i][j] / n;
  }
  const bool warm = iteration <= warmup;
  Expected e;
  e.phi = c.phi;
  for (size_t j = 0; j < ch; ++j) {
    if (warm) {
      const double k = static_cast<double>(iteration);
      e.phi[j] = c.phi[j] * (k - 1) / k + psi2[j] / k;
    } else {
      e.phi[j] = a_f * c.phi[j] + (1 - a_f) * psi2[j];
    }
  }
  Matrix z(m, std::vector<double>(ch));
  e.y = z;
  e.gx = z;
  e.gw.assign(ch, 0.0);
  e.gb.assign(ch, 0.0);
  e.nu = c.nu;
  std::vector<double> mean_ghat_z(ch, 0.0);
  for (size_t i = 0; i < m; ++i) {
    for (size_t j = 0; j < ch; ++j) {
      const double denom = warm ? psi2[j] : c.phi[j];
      z[i][j] = c.x[i][j] / std::sqrt(denom + eps);
      e.y[i][j] = c.weight[j] * z[i][j] + c.bias[j];
      const double g = c.gy[i][j] * c.weight[j];
      const double g_hat = c.mask[i] > 0 ? g - (1 - a_b) * c.nu[j] * z[i][j] : g;
      mean_ghat_z[j] += c.mask[i] * g_hat * z[i][j] / n;
      e.gx[i][j] = g_hat / std::sqrt(psi2[j] + eps);
      e.gw[j] += c.gy[i][j] * z[i][j];
      e.gb[j] += c.gy[i][j];
    }
  }
  for (size_t j = 0; j < ch; ++j) e.nu[j] += mean_ghat_z[j];
  return e;
}

void ExpectNear(const Matrix& a, const Matrix& b, double tol, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].size(); ++j) {
      EXPECT_NEAR(a[i][j], b[i][j], tol) << what << " [" << i << "][" << j << "]";
    }
  }
}

void ExpectNear(const std::vector<double>& a, const std::vector<double>& b, double tol,
                const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], tol) << what << " [" << j << "]";
}

class PowerNormBackwardTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(PowerNormBackwardTest, EqualsTheFormula) {
  NORMSERVE_TEST_SEED(seed);
  const int64_t iteration = GetParam();
  const int64_t warmup = 3;
  const double eps = 1e-5, a_f = 0.9, a_b = 0.8;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t m = 6, ch = 5;
  const at::Tensor x = at::randn({m, ch}, gen, opts).requires_grad_(true);
  const at::Tensor weight = (at::rand({ch}, gen, opts) + 0.5).requires_grad_(true);
  const at::Tensor bias = at::randn({ch}, gen, opts).requires_grad_(true);
  const at::Tensor mask = at::tensor({1.0, 1.0, 0.0, 1.0, 1.0, 0.0}, opts);  // two pad rows
  const at::Tensor gy = at::randn({m, ch}, gen, opts);
  PowerNormBuffers buffers{at::rand({ch}, gen, opts) + 0.5, at::randn({ch}, gen, opts) * 0.1};

  Case c{ToMatrix(x),         ToMatrix(gy),   ToVector(mask),
         ToVector(weight),    ToVector(bias), ToVector(buffers.running_phi),
         ToVector(buffers.nu)};
  const Expected e = Reference(c, eps, a_f, a_b, warmup, iteration);

  const at::Tensor y =
      PowerNormTrain(x, mask, weight, bias, buffers, eps, {a_f, a_b, warmup}, iteration);
  ExpectNear(ToMatrix(y), e.y, 1e-12, "y");
  ExpectNear(ToVector(buffers.running_phi), e.phi, 1e-12, "running_phi");
  y.backward(gy);
  ExpectNear(ToMatrix(x.grad()), e.gx, 1e-10, "dL/dx");
  ExpectNear(ToVector(weight.grad()), e.gw, 1e-10, "dL/dweight");
  ExpectNear(ToVector(bias.grad()), e.gb, 1e-10, "dL/dbias");
  ExpectNear(ToVector(buffers.nu), e.nu, 1e-12, "nu");
}

// Iterations 1 and 3 are in the warm-up (3 passes), 4 and 9 after it.
INSTANTIATE_TEST_SUITE_P(WarmupAndAfter, PowerNormBackwardTest, ::testing::Values(1, 3, 4, 9));

TEST(PowerNormRunningPhiTest, CumulativeInWarmupThenExponential) {
  NORMSERVE_TEST_SEED(seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const int64_t ch = 3, warmup = 4;
  const double eps = 1e-5, a_f = 0.7;
  PowerNormBuffers buffers{at::ones({ch}, opts), at::zeros({ch}, opts)};
  const at::Tensor weight = at::ones({ch}, opts), bias = at::zeros({ch}, opts);
  std::vector<at::Tensor> psi2s;
  std::vector<double> expected_phi(ch, 1.0);
  for (int64_t it = 1; it <= 7; ++it) {
    const at::Tensor x = at::randn({5, ch}, gen, opts) * static_cast<double>(it);
    const at::Tensor psi2 = (x * x).mean(0);
    const at::Tensor phi_before = buffers.running_phi.clone();
    const at::Tensor y =
        PowerNormTrain(x, at::Tensor(), weight, bias, buffers, eps, {a_f, 0.9, warmup}, it);
    const std::vector<double> p = ToVector(psi2);
    if (it <= warmup) {
      psi2s.push_back(psi2);
      // The cumulative average of the warm-up batches' statistics...
      ExpectNear(ToVector(buffers.running_phi), ToVector(at::stack(psi2s).mean(0)), 1e-12,
                 "warm-up phi");
      // ...while the batch statistic normalizes.
      ExpectNear(ToMatrix(y), ToMatrix(x / at::sqrt(psi2 + eps)), 1e-12, "warm-up output");
    } else {
      for (int64_t j = 0; j < ch; ++j) {
        expected_phi[j] = a_f * ToVector(phi_before)[j] + (1 - a_f) * p[j];
      }
      ExpectNear(ToVector(buffers.running_phi), expected_phi, 1e-12, "phi after warm-up");
      // The running phi (before this batch's update) normalizes after the warm-up.
      ExpectNear(ToMatrix(y), ToMatrix(x / at::sqrt(phi_before + eps)), 1e-12, "output");
    }
  }
}

TEST(PowerNormRunningPhiTest, PaddingDoesNotEnterTheStatistic) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  PowerNormBuffers a{at::ones({2}, opts), at::zeros({2}, opts)};
  PowerNormBuffers b{at::ones({2}, opts), at::zeros({2}, opts)};
  const at::Tensor w = at::ones({2}, opts), bias = at::zeros({2}, opts);
  const at::Tensor real = at::tensor({1.0, 2.0, 3.0, 4.0}, opts).view({2, 2});
  const at::Tensor padded = at::cat({real, at::full({3, 2}, 100.0, opts)});
  const at::Tensor mask = at::tensor({1.0, 1.0, 0.0, 0.0, 0.0}, opts);
  const at::Tensor ya = PowerNormTrain(real, at::Tensor(), w, bias, a, 1e-5, {0.9, 0.9, 10}, 1);
  const at::Tensor yb = PowerNormTrain(padded, mask, w, bias, b, 1e-5, {0.9, 0.9, 10}, 1);
  EXPECT_TRUE(at::allclose(a.running_phi, b.running_phi, 0, 1e-14));
  EXPECT_TRUE(at::allclose(ya, yb.narrow(0, 0, 2), 0, 1e-14));
  ExpectNear(ToVector(a.running_phi), {5.0, 10.0}, 1e-12, "phi");
}

TEST(GroupScaleTest, DividesEachGroupByItsRootMeanSquare) {
  NORMSERVE_TEST_SEED(seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor x = at::randn({2, 3, 8}, gen, at::TensorOptions().dtype(at::kDouble));
  const double eps = 1e-5;
  const at::Tensor y = GroupScale(x, 4, eps);
  const auto xa = x.accessor<double, 3>();
  const auto ya = y.accessor<double, 3>();
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 3; ++t) {
      for (int64_t g = 0; g < 4; ++g) {
        const double ms =
            (xa[b][t][2 * g] * xa[b][t][2 * g] + xa[b][t][2 * g + 1] * xa[b][t][2 * g + 1]) / 2;
        for (int64_t c = 2 * g; c < 2 * g + 2; ++c) {
          EXPECT_NEAR(ya[b][t][c], xa[b][t][c] / std::sqrt(ms + eps), 1e-12);
        }
      }
    }
  }
  EXPECT_THROW(GroupScale(x, 3, eps), std::invalid_argument);
}

TEST(PowerNormModuleTest, TrainingRunsGroupScalingThenThePowerFunction) {
  NORMSERVE_TEST_SEED(seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  NormConfig config;
  config.kind = NormKind::kPowerNorm;
  config.groups = 2;
  TensorRegistry registry;
  NormTrainingOptions options;
  options.powernorm.warmup = 1;
  TrainNorm norm(config, 4, "n", registry, options, opts);
  ASSERT_EQ(registry.exported_buffers, std::vector<std::string>{"n.running_phi"});
  ASSERT_TRUE(registry.buffers.count("n.nu"));
  const at::Tensor x = at::randn({2, 3, 4}, gen, opts);
  const at::Tensor mask = at::tensor({1.0, 1.0, 1.0, 1.0, 0.0, 0.0}, opts).view({2, 3});
  const at::Tensor y = norm.Forward(x, mask, ForwardMode{true, 1});
  const at::Tensor scaled = GroupScale(x, 2, config.group_eps).view({6, 4});
  const at::Tensor real = scaled.narrow(0, 0, 4);
  const at::Tensor psi2 = (real * real).mean(0);
  EXPECT_TRUE(at::allclose(y.view({6, 4}), scaled / at::sqrt(psi2 + config.eps), 0, 1e-12));
  EXPECT_TRUE(at::allclose(registry.buffers["n.running_phi"], psi2, 0, 1e-12));
  // Eval mode: the running phi, as the served model folds it.
  const at::Tensor ye = norm.Forward(x, mask, ForwardMode{});
  EXPECT_TRUE(at::allclose(ye.view({6, 4}), scaled / at::sqrt(psi2 + config.eps), 0, 1e-12));
}

}  // namespace
}  // namespace normserve::train
