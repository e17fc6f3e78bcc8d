// The CPU norm kernels (norm_kernels.h, norm_op.h) against the float64 reference of
// norm_kernel_check.h: every variant x dtype x {plain, fused} x d in {1, 3, 8, 33, 127, 1000,
// 4097, 8192} x rows {1, 3, 33} x row strides, on both the AVX2 and the baseline row kernels,
// with fresh random inputs and poisoned outputs. Plus: the tensor API (non-contiguous rows,
// out-parameter form), the folding of PowerNorm's running_phi and BatchNorm's running
// statistics, and the sampled timing sink.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "models/norm/norm.h"
#include "models/norm/norm_config.h"
#include "models/norm/norm_kernels.h"
#include "models/norm/norm_op.h"
#include "models/norm/norm_timing.h"
#include "tests/kernels/norm_kernel_check.h"

namespace normserve::kernel_test {
namespace {

std::string SeedTrace(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (replay: NORMSERVE_TEST_SEED=" + std::to_string(seed) +
         ")";
}

class CpuKernels : public ::testing::TestWithParam<std::tuple<int, NormDtype, bool>> {
 protected:
  static void SetUpTestSuite() { at::set_num_threads(2); }
  void SetUp() override { default_threshold_ = cpu::StreamingThresholdBytes(); }
  void TearDown() override {
    cpu::ForceGenericKernels(false);
    cpu::SetStreamingThresholdBytes(default_threshold_);
  }
  int64_t default_threshold_ = 0;
};

// The kernel configurations every case runs on: the AVX2 build with ordinary stores, the AVX2
// build streaming its output (non-temporal stores, as for outputs beyond the LLC), and the
// baseline build streaming.
struct KernelConfig {
  bool generic;
  bool stream;
};
const KernelConfig kConfigs[] = {{false, false}, {false, true}, {true, true}};

void Apply(const KernelConfig& c) {
  cpu::ForceGenericKernels(c.generic);
  cpu::SetStreamingThresholdBytes(c.stream ? 0 : std::numeric_limits<int64_t>::max());
}

// Every d, rows and stride layout for one variant x dtype x form, on each ISA's kernels.
TEST_P(CpuKernels, MatchFloat64Reference) {
  const Variant variant = Variants()[std::get<0>(GetParam())];
  const NormDtype dtype = std::get<1>(GetParam());
  const bool fused = std::get<2>(GetParam());
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  for (const KernelConfig& config : kConfigs) {
    Apply(config);
    SCOPED_TRACE(std::string("kernels: ") + cpu::KernelIsa() +
                 (config.stream ? ", streaming stores" : ""));
    for (int64_t d : kDims) {
      for (int64_t rows : kRows) {
        const std::vector<int64_t> strides = StridesFor(d);
        // Contiguous, then strided x (and r, y with other strides).
        const std::vector<std::tuple<int64_t, int64_t, int64_t>> layouts = {
            {d, d, d}, {strides[1], strides[2], d + 1}, {strides[2], strides[1], strides[2]}};
        for (const auto& [xs, rs, ys] : layouts) {
          Problem p = MakeProblem(variant, dtype, fused, rows, d, xs, rs, ys, rng);
          const Buffer x_before = p.x;
          const Problem original = p;  // r before the kernel
          cpu::RunNorm(p.HostArgs());
          ASSERT_TRUE(CheckProblem(original, p.y, fused ? &p.r : nullptr));
          ASSERT_EQ(x_before.bytes, p.x.bytes) << p.Describe() << ": x was modified";
        }
      }
    }
  }
}

std::string CaseName(const ::testing::TestParamInfo<CpuKernels::ParamType>& info) {
  return Variants()[std::get<0>(info.param)].name + "_" + DtypeName(std::get<1>(info.param)) +
         (std::get<2>(info.param) ? "_fused" : "_plain");
}

INSTANTIATE_TEST_SUITE_P(AllVariants, CpuKernels,
                         ::testing::Combine(::testing::Range(0,
                                                             static_cast<int>(Variants().size())),
                                            ::testing::ValuesIn(kDtypes), ::testing::Bool()),
                         CaseName);

TEST(CpuKernelsApi, RejectsBadArguments) {
  std::vector<float> x(8, 1.0f), y(8), scale(8, 1.0f);
  NormKernelArgs a;
  a.x = x.data();
  a.y = y.data();
  a.scale = scale.data();
  a.rows = 1;
  a.d = 8;
  a.x_stride = a.y_stride = 8;
  a.statistic = RowStatistic::kGroupMeanSquare;
  a.groups = 3;
  EXPECT_THROW(cpu::RunNorm(a), std::invalid_argument);
  a.statistic = RowStatistic::kMeanSquare;
  a.stat_channels = 9;
  EXPECT_THROW(cpu::RunNorm(a), std::invalid_argument);
  a.stat_channels = 8;
  a.rows = 2;
  a.y_stride = 4;  // overlapping output rows
  EXPECT_THROW(cpu::RunNorm(a), std::invalid_argument);
  a.rows = 0;  // nothing to do: no error, nothing touched
  EXPECT_NO_THROW(cpu::RunNorm(a));
}

// The dtype conversions, bit-exact: a BatchNorm map y = x * s (one fp32 product, then one
// rounding to the dtype) over every 16-bit pattern (subnormals, infinities, NaN included) and
// scales that push products into overflow and underflow; and NaN/inf rows stay non-finite.
TEST(CpuKernelsApi, ConversionsRoundToNearestEven) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_scale(-8.0, 8.0);
  const int64_t default_threshold = cpu::StreamingThresholdBytes();
  for (const KernelConfig& config : kConfigs) {
    Apply(config);
    SCOPED_TRACE(std::string("kernels: ") + cpu::KernelIsa() +
                 (config.stream ? ", streaming stores" : ""));
    for (NormDtype dtype : {NormDtype::kFloat16, NormDtype::kBFloat16}) {
      for (bool with_nan : {true, false}) {  // a row without NaN takes the fast bf16 rounding
        const int64_t d = 65536 + 7;         // every pattern, plus a scalar tail
        Buffer x(dtype, d), y(dtype, d);
        for (int64_t i = 0; i < d; ++i) {
          const uint16_t bits = static_cast<uint16_t>(i);
          std::memcpy(x.bytes.data() + 2 * i, &bits, 2);
          if (!with_nan && std::isnan(x.Get(i))) x.Set(i, 0.0);
        }
        y.Poison();
        std::vector<float> scale(d);
        for (float& s : scale) s = static_cast<float>(std::exp2(log_scale(rng)));
        NormKernelArgs a;
        a.x = x.data();
        a.y = y.data();
        a.rows = 1;
        a.d = d;
        a.x_stride = a.y_stride = d;
        a.dtype = dtype;
        a.statistic = RowStatistic::kNone;
        a.scale = scale.data();
        cpu::RunNorm(a);
        for (int64_t i = 0; i < d; ++i) {
          const double in = x.Get(i);
          const double expected =
              RoundToDtype(static_cast<double>(static_cast<float>(in) * scale[i]), dtype);
          const double got = y.Get(i);
          if (std::isnan(expected)) {
            ASSERT_TRUE(std::isnan(got)) << DtypeName(dtype) << " pattern " << i;
          } else {
            ASSERT_EQ(got, expected)
                << DtypeName(dtype) << " pattern " << i << " x " << in << " scale " << scale[i];
          }
        }
      }
    }
    // A NaN or an infinity in a row makes that whole row non-finite, and no other row.
    for (NormDtype dtype : kDtypes) {
      for (const Variant& v : Variants()) {
        if (v.statistic == RowStatistic::kNone) continue;
        Problem p = MakeProblem(v, dtype, false, 3, 40, 40, 40, 40, rng);
        p.x.Set(40 + 1, std::numeric_limits<double>::quiet_NaN());
        cpu::RunNorm(p.HostArgs());
        for (int64_t c = 0; c < 40; ++c) {
          EXPECT_TRUE(std::isfinite(p.y.Get(c))) << p.Describe();
          EXPECT_TRUE(std::isfinite(p.y.Get(80 + c))) << p.Describe();
        }
        if (v.statistic != RowStatistic::kGroupMeanSquare) {
          for (int64_t c = 0; c < 40; ++c) EXPECT_TRUE(std::isnan(p.y.Get(40 + c))) << p.Describe();
        }
      }
    }
  }
  cpu::ForceGenericKernels(false);
  cpu::SetStreamingThresholdBytes(default_threshold);
}

// ---- The tensor API (norm_op.h) ------------------------------------------------------------

at::ScalarType ToScalar(NormDtype t) {
  return t == NormDtype::kFloat32 ? at::kFloat
                                  : (t == NormDtype::kFloat16 ? at::kHalf : at::kBFloat16);
}

NormParams ParamsFor(const Problem& p) {
  NormParams params;
  params.statistic = p.variant.statistic;
  params.stat_channels = p.stat_channels;
  params.groups = p.groups;
  params.eps = static_cast<float>(p.variant.eps);
  params.eps_inside_sqrt = p.variant.eps_inside_sqrt;
  params.scale = at::tensor(p.scale);
  if (p.variant.shift) params.shift = at::tensor(p.shift);
  return params;
}

// A [rows, d] tensor with p's values, laid out as `layout` says: "contiguous", "rows" (row
// stride > d), "transposed" (channel stride != 1: no row view, the op copies).
at::Tensor ToTensor(const Buffer& b, int64_t rows, int64_t d, int64_t stride,
                    const std::string& layout) {
  at::Tensor dense = at::empty({rows, d}, at::kDouble);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t c = 0; c < d; ++c) dense[i][c] = b.Get(i * stride + c);
  }
  const at::ScalarType type = ToScalar(b.dtype);
  if (layout == "rows") {
    at::Tensor wide = at::full({rows, d + 5}, std::numeric_limits<double>::quiet_NaN()).to(type);
    wide.narrow(1, 2, d).copy_(dense);
    return wide.narrow(1, 2, d);
  }
  if (layout == "transposed") return dense.t().contiguous().to(type).t();
  return dense.to(type);
}

Buffer FromTensor(const at::Tensor& t, NormDtype dtype) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  Buffer b(dtype, c.numel());
  for (int64_t i = 0; i < c.numel(); ++i) b.Set(i, c.data_ptr<double>()[i]);
  return b;
}

TEST(CpuKernelsApi, TensorFormsWithAnyLayout) {
  c10::InferenceMode guard;
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  for (const Variant& v : Variants()) {
    for (NormDtype dtype : kDtypes) {
      for (bool fused : {false, true}) {
        for (const char* layout : {"contiguous", "rows", "transposed"}) {
          const int64_t rows = 5, d = 40;
          Problem p = MakeProblem(v, dtype, fused, rows, d, d, d, d, rng);
          SCOPED_TRACE(p.Describe() + " layout " + layout);
          const NormParams params = ParamsFor(p);
          const at::Tensor x = ToTensor(p.x, rows, d, d, layout);
          const at::Tensor y = at::full({rows, d}, NAN, at::TensorOptions(ToScalar(dtype)));
          at::Tensor r;
          if (fused) {
            r = ToTensor(p.r, rows, d, d, layout);
            NormForwardResidualInto(x, r, params, y);
          } else {
            NormForwardInto(x, params, y);
          }
          const Buffer r_after = fused ? FromTensor(r, dtype) : Buffer();
          ASSERT_TRUE(CheckProblem(p, FromTensor(y, dtype), fused ? &r_after : nullptr));
          // The allocating forms agree with the out-parameter forms.
          if (!fused) EXPECT_TRUE(at::equal(NormForward(x, params), y));
        }
      }
    }
  }
}

TEST(CpuKernelsApi, TensorChecks) {
  c10::InferenceMode guard;
  NormParams p;
  p.scale = at::ones({8});
  const at::Tensor x = at::randn({2, 8});
  EXPECT_THROW(NormForwardInto(x, p, at::empty({2, 7})), c10::Error);               // shape
  EXPECT_THROW(NormForwardInto(x, p, at::empty({2, 8}, at::kDouble)), c10::Error);  // dtype
  EXPECT_THROW(NormForwardInto(x, p, x), c10::Error);                               // y aliases x
  EXPECT_THROW(NormForward(x.to(at::kDouble), p), c10::Error);
  p.statistic = RowStatistic::kGroupMeanSquare;
  p.groups = 3;
  EXPECT_THROW(NormForward(x, p), c10::Error);
  // Empty inputs are fine.
  p.groups = 2;
  EXPECT_EQ(NormForward(at::empty({0, 8}), p).numel(), 0);
}

// ---- Folding at load ---------------------------------------------------------------------------

// FoldNorm folds PowerNorm's running_phi and BatchNorm's running statistics into one
// per-channel scale and shift; the folded op must give the unfolded formula of DESIGN.md
// section 3, evaluated here in float64 from the stored tensors.
TEST(NormFolding, FoldedEqualsUnfoldedFormula) {
  c10::InferenceMode guard;
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(SeedTrace(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.05, 4.0);
  for (NormKind kind : {NormKind::kPowerNorm, NormKind::kBatchNorm}) {
    for (int64_t d : {8, 33, 1000, 4096}) {
      NormConfig config;
      config.kind = kind;
      config.eps = 1e-5;
      config.group_eps = 1e-5;
      config.groups = kind == NormKind::kPowerNorm ? GroupsFor(d) : 1;
      const int64_t rows = 7;
      std::vector<double> g(d), b(d), stat1(d), stat2(d), x(rows * d);
      for (int64_t c = 0; c < d; ++c) {
        g[c] = static_cast<float>(1.0 + 0.3 * normal(rng));
        b[c] = static_cast<float>(0.5 * normal(rng));
        stat1[c] = static_cast<float>(uniform(rng));  // running_phi or running_var
        stat2[c] = static_cast<float>(normal(rng));   // running_mean
      }
      for (double& e : x) e = static_cast<float>(1.5 * normal(rng) + 0.3);
      const auto f32 = [](const std::vector<double>& v) {
        return at::tensor(v, at::kDouble).to(at::kFloat);
      };
      NormWeights w;
      w.weight = f32(g);
      w.bias = f32(b);
      if (kind == NormKind::kPowerNorm) {
        w.running_phi = f32(stat1);
      } else {
        w.running_var = f32(stat1);
        w.running_mean = f32(stat2);
      }
      const NormParams params = FoldNorm(config, d, w);
      EXPECT_EQ(params.kind, kind);
      const at::Tensor xt = f32(x).reshape({rows, d});
      const at::Tensor y = NormForward(xt, params).to(at::kDouble).contiguous();
      const double* got = y.data_ptr<double>();
      double worst = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const double* row = x.data() + i * d;
        std::vector<double> expected(d);
        if (kind == NormKind::kPowerNorm) {
          const int64_t size = d / config.groups;
          for (int64_t grp = 0; grp < config.groups; ++grp) {
            double ms = 0;
            for (int64_t c = grp * size; c < (grp + 1) * size; ++c) ms += row[c] * row[c];
            ms /= static_cast<double>(size);
            for (int64_t c = grp * size; c < (grp + 1) * size; ++c) {
              const double scaled = row[c] / std::sqrt(ms + config.group_eps);
              expected[c] = g[c] * scaled / std::sqrt(stat1[c] + config.eps) + b[c];
            }
          }
        } else {
          for (int64_t c = 0; c < d; ++c) {
            expected[c] = g[c] * (row[c] - stat2[c]) / std::sqrt(stat1[c] + config.eps) + b[c];
          }
        }
        for (int64_t c = 0; c < d; ++c) {
          worst = std::max(worst,
                           std::fabs(got[i * d + c] - expected[c]) / (1 + std::fabs(expected[c])));
        }
      }
      EXPECT_LE(worst, 1e-5) << NormKindName(kind) << " d=" << d;
    }
  }
}

// ---- Sampled timing --------------------------------------------------------------------------

struct Sample {
  std::string norm, device, dtype;
  double seconds;
};

class NormTimingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetNormTimingSink(
        [this](std::string_view n, std::string_view dev, std::string_view t, double s) {
          samples.push_back({std::string(n), std::string(dev), std::string(t), s});
        });
  }
  void TearDown() override {
    SetNormTimingSink(nullptr);
    SetNormTimingSampleEvery(16);
  }
  // One "forward": two layernorm launches in fp32 and one rmsnorm launch in bf16.
  void Forward() {
    const NormForwardTiming timing;
    NormParams ln;
    ln.kind = NormKind::kLayerNorm;
    ln.scale = at::ones({64});
    NormParams rms = ln;
    rms.kind = NormKind::kRMSNorm;
    rms.statistic = RowStatistic::kMeanSquare;
    const at::Tensor x = at::randn({16, 64});
    NormForward(x, ln);
    NormForwardResidual(x, at::randn({16, 64}), ln);
    NormForward(x.to(at::kBFloat16), rms);
  }
  std::vector<Sample> samples;
};

TEST_F(NormTimingTest, ReportsOneForwardInN) {
  c10::InferenceMode guard;
  SetNormTimingSampleEvery(4);
  EXPECT_EQ(NormTimingSampleEvery(), 4);
  for (int i = 0; i < 16; ++i) Forward();
  // 4 sampled forwards, each reporting (layernorm, cpu, float32) and (rmsnorm, cpu, bfloat16).
  ASSERT_EQ(samples.size(), 8u);
  std::map<std::string, int> counts;
  for (const Sample& s : samples) {
    EXPECT_EQ(s.device, "cpu");
    EXPECT_GT(s.seconds, 0.0);
    EXPECT_LT(s.seconds, 1.0);
    ++counts[s.norm + "/" + s.dtype];
  }
  EXPECT_EQ(counts["layernorm/float32"], 4);
  EXPECT_EQ(counts["rmsnorm/bfloat16"], 4);
}

TEST_F(NormTimingTest, EveryForwardWhenNIsOne) {
  c10::InferenceMode guard;
  SetNormTimingSampleEvery(1);
  for (int i = 0; i < 5; ++i) Forward();
  EXPECT_EQ(samples.size(), 10u);
}

TEST_F(NormTimingTest, OffWithoutSinkOrWithZero) {
  c10::InferenceMode guard;
  SetNormTimingSampleEvery(0);
  for (int i = 0; i < 5; ++i) Forward();
  EXPECT_TRUE(samples.empty());
  SetNormTimingSampleEvery(1);
  SetNormTimingSink(nullptr);
  for (int i = 0; i < 5; ++i) Forward();
  EXPECT_TRUE(samples.empty());
}

TEST_F(NormTimingTest, NestedGuardsBelongToTheOuterForward) {
  c10::InferenceMode guard;
  SetNormTimingSampleEvery(1);
  {
    const NormForwardTiming outer;
    EXPECT_TRUE(outer.sampled());
    Forward();  // nested: its launches count in the outer forward
    Forward();
    EXPECT_TRUE(samples.empty());
  }
  ASSERT_EQ(samples.size(), 2u);
}

TEST_F(NormTimingTest, NormCallsOutsideAForwardAreNotTimed) {
  c10::InferenceMode guard;
  SetNormTimingSampleEvery(1);
  NormParams ln;
  ln.scale = at::ones({8});
  NormForward(at::randn({2, 8}), ln);
  EXPECT_TRUE(samples.empty());
}

}  // namespace
}  // namespace normserve::kernel_test
