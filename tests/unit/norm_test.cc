// Every norm variant through FoldNorm + NormForward against a float64 reference written here
// from the formulas of DESIGN.md section 3 (plain loops per row, none of the library's code).
#include "models/norm/norm.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "models/errors.h"
#include "models/io/weight_store.h"
#include "models/norm/norm_config.h"
#include "models/norm/norm_op.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

const std::vector<int64_t> kDims = {1, 3, 8, 33, 127, 255, 1000, 4097};

// ---------------------------------------------------------------------------------------
// The float64 reference.

struct RefWeights {
  std::vector<double> g, b, running_mean, running_var, running_phi;  // b empty: no bias
};

std::vector<double> ToDoubles(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double InverseRoot(double s, double eps, bool eps_inside_sqrt) {
  return eps_inside_sqrt ? 1.0 / std::sqrt(s + eps) : 1.0 / (std::sqrt(s) + eps);
}

// The reference values, and per element the sum of the magnitudes of the terms that make it
// up (|g * normalized| + |b|, BatchNorm's |g x / sd| + |g mean / sd| + |b|): a float
// computation is exact only relative to those, e.g. when a bias nearly cancels the rest.
struct RefResult {
  std::vector<double> y;
  std::vector<double> magnitude;
};

// One row of size d, normalized as DESIGN.md section 3 says; appends to `out`.
void ReferenceRow(const NormConfig& c, const double* x, int64_t d, const RefWeights& w,
                  RefResult& out) {
  const auto bias = [&](int64_t i) { return w.b.empty() ? 0.0 : w.b[i]; };
  const auto emit = [&](double term, double extra_magnitude, int64_t i) {
    out.y.push_back(term + bias(i));
    out.magnitude.push_back(std::abs(term) + extra_magnitude + std::abs(bias(i)));
  };
  switch (c.kind) {
    case NormKind::kLayerNorm: {
      double mean = 0;
      for (int64_t i = 0; i < d; ++i) mean += x[i];
      mean /= static_cast<double>(d);
      double var = 0;
      for (int64_t i = 0; i < d; ++i) var += (x[i] - mean) * (x[i] - mean);
      var /= static_cast<double>(d);
      for (int64_t i = 0; i < d; ++i) emit(w.g[i] * (x[i] - mean) / std::sqrt(var + c.eps), 0, i);
      break;
    }
    case NormKind::kRMSNorm:
    case NormKind::kPartialRMSNorm: {
      int64_t k = d;
      if (c.kind == NormKind::kPartialRMSNorm) {
        const double exact = c.partial * static_cast<double>(d);
        k = static_cast<int64_t>(c.partial_round_up ? std::ceil(exact) : std::floor(exact));
        // floor(p*d) is 0 for d < 1/p; at least one channel is always used.
        k = std::min<int64_t>(std::max<int64_t>(k, 1), d);
      }
      double ms = 0;
      for (int64_t i = 0; i < k; ++i) ms += x[i] * x[i];
      ms /= static_cast<double>(k);
      const double inv = InverseRoot(ms, c.eps, c.eps_inside_sqrt);
      for (int64_t i = 0; i < d; ++i) emit(w.g[i] * x[i] * inv, 0, i);
      break;
    }
    case NormKind::kCRMSNorm: {
      // The row is the first d channels of a zero-mean row of d + 1: the last is -sum(x).
      double sum = 0, squares = 0;
      for (int64_t i = 0; i < d; ++i) {
        sum += x[i];
        squares += x[i] * x[i];
      }
      const double ms = (squares + sum * sum) / static_cast<double>(d + 1);
      const double inv = InverseRoot(ms, c.eps, c.eps_inside_sqrt);
      for (int64_t i = 0; i < d; ++i) emit(w.g[i] * x[i] * inv, 0, i);
      break;
    }
    case NormKind::kPowerNorm: {
      const int64_t size = d / c.groups;
      for (int64_t grp = 0; grp < c.groups; ++grp) {
        double ms = 0;
        for (int64_t i = grp * size; i < (grp + 1) * size; ++i) ms += x[i] * x[i];
        ms /= static_cast<double>(size);
        for (int64_t i = grp * size; i < (grp + 1) * size; ++i) {
          const double scaled = x[i] / std::sqrt(ms + c.group_eps);
          emit(w.g[i] * scaled / std::sqrt(w.running_phi[i] + c.eps), 0, i);
        }
      }
      break;
    }
    case NormKind::kBatchNorm: {
      // The PowerNorm fork's variant divides the row by its RMS first.
      double rms = 1;
      if (c.layer_scaling) {
        double ms = 0;
        for (int64_t i = 0; i < d; ++i) ms += x[i] * x[i];
        rms = std::sqrt(ms / static_cast<double>(d) + c.group_eps);
      }
      for (int64_t i = 0; i < d; ++i) {
        const double scale = w.g[i] / std::sqrt(w.running_var[i] + c.eps);
        emit(scale * (x[i] / rms - w.running_mean[i]),
             std::abs(scale * x[i] / rms) + std::abs(scale * w.running_mean[i]), i);
      }
      break;
    }
  }
}

// The reference over the last dimension of x, flat in row-major order.
RefResult Reference(const NormConfig& c, const at::Tensor& x, const RefWeights& w) {
  const int64_t d = x.size(-1);
  const std::vector<double> flat = ToDoubles(x);
  RefResult out;
  out.y.reserve(flat.size());
  out.magnitude.reserve(flat.size());
  for (size_t row = 0; row * d < flat.size(); ++row)
    ReferenceRow(c, flat.data() + row * d, d, w, out);
  return out;
}

// ---------------------------------------------------------------------------------------
// Cases and inputs.

struct NormCase {
  std::string name;
  NormConfig config;
};

void PrintTo(const NormCase& c, std::ostream* os) { *os << c.name; }

NormConfig Make(NormKind kind) {
  NormConfig c;
  c.kind = kind;
  return c;
}

std::vector<NormCase> AllCases() {
  std::vector<NormCase> cases;
  cases.push_back({"LayerNorm", Make(NormKind::kLayerNorm)});
  {
    NormConfig c = Make(NormKind::kRMSNorm);
    cases.push_back({"RMSNormBias", c});
    c.bias = false;
    c.eps = 1e-6;
    cases.push_back({"RMSNormNoBias", c});
    c.eps_inside_sqrt = false;
    c.eps = 1e-8;
    cases.push_back({"RMSNormEpsOutside", c});
  }
  for (bool round_up : {true, false}) {
    for (bool inside : {true, false}) {
      NormConfig c = Make(NormKind::kPartialRMSNorm);
      c.partial = 0.0625;
      c.partial_round_up = round_up;
      c.eps_inside_sqrt = inside;
      c.bias = inside;  // with and without bias
      c.eps = inside ? 1e-5 : 1e-8;
      cases.push_back({std::string("PRMSNorm") + (round_up ? "Ceil" : "Floor") +
                           (inside ? "EpsInside" : "EpsOutside"),
                       c});
    }
  }
  for (int64_t groups : {1, 4}) {
    NormConfig c = Make(NormKind::kPowerNorm);
    c.groups = groups;
    c.eps = 1e-5;
    c.group_eps = 1e-5;
    cases.push_back({"PowerNormGroups" + std::to_string(groups), c});
  }
  cases.push_back({"BatchNorm", Make(NormKind::kBatchNorm)});
  {
    NormConfig c = Make(NormKind::kBatchNorm);
    c.layer_scaling = true;
    cases.push_back({"BatchNormLayerScaling", c});
  }
  {
    NormConfig c = Make(NormKind::kCRMSNorm);
    c.bias = false;  // as the Pre-CRMSNorm conversion writes it (gain 1 folded away)
    cases.push_back({"CRMSNormNoBias", c});
    c.bias = true;
    c.eps_inside_sqrt = false;
    c.eps = 1e-8;
    cases.push_back({"CRMSNormBiasEpsOutside", c});
  }
  return cases;
}

bool Supports(const NormConfig& c, int64_t d) {
  return c.kind != NormKind::kPowerNorm || d % c.groups == 0;
}

bool HasBias(const NormConfig& c) {
  return (c.kind != NormKind::kRMSNorm && c.kind != NormKind::kPartialRMSNorm &&
          c.kind != NormKind::kCRMSNorm) ||
         c.bias;
}

// Random weights of a site as a checkpoint stores them, float32.
NormWeights RandomWeights(const NormConfig& c, int64_t d, at::Generator& gen) {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  NormWeights w;
  w.weight = at::empty({d}, f).normal_(1.0, 0.3, gen);
  if (HasBias(c)) w.bias = at::empty({d}, f).normal_(0.0, 0.5, gen);
  if (c.kind == NormKind::kBatchNorm) {
    w.running_mean = at::empty({d}, f).normal_(0.0, 1.0, gen);
    w.running_var = at::empty({d}, f).uniform_(0.05, 4.0, gen);
  }
  if (c.kind == NormKind::kPowerNorm) w.running_phi = at::empty({d}, f).uniform_(0.05, 4.0, gen);
  return w;
}

RefWeights ToRef(const NormWeights& w) {
  RefWeights r;
  r.g = ToDoubles(w.weight);
  if (w.bias.defined()) r.b = ToDoubles(w.bias);
  if (w.running_mean.defined()) r.running_mean = ToDoubles(w.running_mean);
  if (w.running_var.defined()) r.running_var = ToDoubles(w.running_var);
  if (w.running_phi.defined()) r.running_phi = ToDoubles(w.running_phi.reshape({-1}));
  return r;
}

// Rows with a random per-row offset and scale, so that mean and RMS differ from row to row.
// Values are kept at least 0.1 away from zero: pRMSNorm divides every channel by the RMS of
// the first few, and a near-zero statistic there overflows float16 outputs (the reference
// itself is then out of the dtype's range, which says nothing about the kernel).
at::Tensor RandomInput(at::IntArrayRef shape, at::Generator& gen) {
  const auto f = at::TensorOptions().dtype(at::kFloat);
  std::vector<int64_t> stat_shape(shape.begin(), shape.end());
  stat_shape.back() = 1;
  const at::Tensor scale = at::empty(stat_shape, f).uniform_(0.2, 5.0, gen);
  const at::Tensor offset = at::empty(stat_shape, f).uniform_(-2.0, 2.0, gen);
  const at::Tensor v = at::empty(shape, f).normal_(0.0, 1.0, gen) * scale + offset;
  const at::Tensor push = at::where(v >= 0, at::scalar_tensor(0.1), at::scalar_tensor(-0.1));
  return at::where(v.abs() < 0.1, v + push, v);
}

// x and a residual r in `dtype` whose sum x + r is a RandomInput (so also away from zero).
std::pair<at::Tensor, at::Tensor> RandomResidualPair(at::IntArrayRef shape, at::ScalarType dtype,
                                                     at::Generator& gen) {
  const at::Tensor x = RandomInput(shape, gen).to(dtype);
  const at::Tensor sum = RandomInput(shape, gen);
  return {x, (sum - x.to(at::kFloat)).to(dtype)};
}

// Tolerance relative to the largest term magnitude (RefResult), per storage dtype.
double Tolerance(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return 1e-5;
    case at::kHalf:
      return 2e-3;
    case at::kBFloat16:
      return 2e-2;
    default:
      return 0;
  }
}

// Every element within the dtype's tolerance times the largest term magnitude of the rows.
void ExpectMatches(const RefResult& expected, const at::Tensor& actual, at::ScalarType dtype) {
  ASSERT_EQ(actual.scalar_type(), dtype);
  const std::vector<double> got = ToDoubles(actual);
  ASSERT_EQ(got.size(), expected.y.size());
  double max_ref = 0, max_magnitude = 0;
  for (double v : expected.y) max_ref = std::max(max_ref, std::abs(v));
  for (double v : expected.magnitude) max_magnitude = std::max(max_magnitude, v);
  const double tol = Tolerance(dtype) * std::max(max_magnitude, 1e-3);
  double worst = 0;
  size_t worst_index = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::isfinite(got[i]) ? std::abs(got[i] - expected.y[i]) : INFINITY;
    if (!(err <= worst)) worst = err, worst_index = i;
  }
  EXPECT_LE(worst, tol) << "element " << worst_index << ": got " << got[worst_index]
                        << ", reference " << expected.y[worst_index] << " (max |ref| " << max_ref
                        << ", max term magnitude " << max_magnitude << ")";
}

const at::ScalarType kDtypes[] = {at::kFloat, at::kHalf, at::kBFloat16};

std::string Describe(at::ScalarType dtype, at::IntArrayRef shape) {
  std::string s = std::string(c10::toString(dtype)) + " shape [";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

class NormVariantTest : public ::testing::TestWithParam<NormCase> {};

TEST_P(NormVariantTest, MatchesFloat64Reference) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const NormConfig& c = GetParam().config;
  int checked = 0;
  for (int64_t d : kDims) {
    if (!Supports(c, d)) continue;
    const NormWeights weights = RandomWeights(c, d, gen);
    const NormParams params = FoldNorm(c, d, weights);
    const RefWeights ref = ToRef(weights);
    for (const std::vector<int64_t>& shape :
         std::vector<std::vector<int64_t>>{{1, d}, {7, d}, {2, 3, d}, {d}}) {
      for (at::ScalarType dtype : kDtypes) {
        SCOPED_TRACE(Describe(dtype, shape));
        const at::Tensor x = RandomInput(shape, gen).to(dtype);
        const at::Tensor before = x.clone();
        const at::Tensor y = NormForward(x, params);
        EXPECT_EQ(y.sizes(), x.sizes());
        EXPECT_TRUE(y.is_contiguous());
        EXPECT_TRUE(at::equal(x, before)) << "NormForward modified its input";
        ExpectMatches(Reference(c, x, ref), y, dtype);
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

// Rows with a stride larger than d: x = big[:, :d] of a wider tensor, and a column slice
// that starts at an offset.
TEST_P(NormVariantTest, NonContiguousRows) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const NormConfig& c = GetParam().config;
  for (int64_t d : kDims) {
    if (!Supports(c, d)) continue;
    const NormWeights weights = RandomWeights(c, d, gen);
    const NormParams params = FoldNorm(c, d, weights);
    const RefWeights ref = ToRef(weights);
    for (at::ScalarType dtype : kDtypes) {
      SCOPED_TRACE(Describe(dtype, {7, d}));
      const at::Tensor big = RandomInput({7, d + 13}, gen).to(dtype);
      for (int64_t start : {int64_t{0}, int64_t{5}}) {
        const at::Tensor x = big.narrow(1, start, d);
        ASSERT_FALSE(x.is_contiguous());
        ASSERT_EQ(x.stride(0), d + 13);
        const at::Tensor y = NormForward(x, params);
        EXPECT_TRUE(y.is_contiguous());
        ExpectMatches(Reference(c, x.contiguous(), ref), y, dtype);
      }
      // Every other row of a [14, d] tensor.
      const at::Tensor tall = RandomInput({14, d}, gen).to(dtype);
      const at::Tensor strided = tall.slice(0, 0, 14, 2);
      ExpectMatches(Reference(c, strided.contiguous(), ref), NormForward(strided, params), dtype);
    }
  }
}

// residual += x, then norm(residual): the returned value and the updated residual.
TEST_P(NormVariantTest, ResidualFusedForm) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const NormConfig& c = GetParam().config;
  for (int64_t d : kDims) {
    if (!Supports(c, d)) continue;
    const NormWeights weights = RandomWeights(c, d, gen);
    const NormParams params = FoldNorm(c, d, weights);
    const RefWeights ref = ToRef(weights);
    for (at::ScalarType dtype : kDtypes) {
      for (int64_t rows : {1, 7}) {
        SCOPED_TRACE(Describe(dtype, {rows, d}));
        const auto [x, residual] = RandomResidualPair({rows, d}, dtype, gen);
        const at::Tensor expected_sum = residual + x;  // in the storage dtype, as the op adds
        const at::Tensor x_before = x.clone();
        const at::Tensor y = NormForwardResidual(x, residual, params);
        EXPECT_TRUE(at::equal(residual, expected_sum)) << "residual was not updated to x + r";
        EXPECT_TRUE(at::equal(x, x_before)) << "x was modified";
        ExpectMatches(Reference(c, expected_sum, ref), y, dtype);
      }
    }
  }
}

// The Norm module takes fairseq's names from a WeightStore (running_phi as [1, d, 1, 1],
// BatchNorm's num_batches_tracked) and computes the same as the reference.
TEST_P(NormVariantTest, ModuleFromWeightStore) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const NormConfig& c = GetParam().config;
  const std::string prefix = "encoder.layers.0.self_attn_layer_norm";
  for (int64_t d : {8, 33, 1000}) {
    if (!Supports(c, d)) continue;
    SCOPED_TRACE("d = " + std::to_string(d));
    const NormWeights weights = RandomWeights(c, d, gen);
    std::map<std::string, at::Tensor> tensors;
    tensors[prefix + ".weight"] = weights.weight;
    if (weights.bias.defined()) tensors[prefix + ".bias"] = weights.bias;
    if (weights.running_phi.defined()) {
      tensors[prefix + ".running_phi"] = weights.running_phi.reshape({1, d, 1, 1});
    }
    if (weights.running_mean.defined()) {
      tensors[prefix + ".running_mean"] = weights.running_mean;
      tensors[prefix + ".running_var"] = weights.running_var;
      tensors[prefix + ".num_batches_tracked"] = at::scalar_tensor(1234.0, at::kFloat);
    }
    const std::vector<std::string> names = NormTensorNames(c);
    EXPECT_EQ(names.size() + (c.kind == NormKind::kBatchNorm ? 1 : 0), tensors.size());

    WeightStore store("test.safetensors", tensors);
    const Norm norm(c, d, store, prefix);
    EXPECT_NO_THROW(store.CheckAllTaken());
    EXPECT_EQ(norm.kind(), c.kind);
    for (at::ScalarType dtype : kDtypes) {
      SCOPED_TRACE(Describe(dtype, {5, d}));
      const at::Tensor x = RandomInput({5, d}, gen).to(dtype);
      ExpectMatches(Reference(c, x, ToRef(weights)), norm(x), dtype);
      const at::Tensor r = RandomResidualPair({5, d}, dtype, gen).second;
      const at::Tensor sum = r + x;
      ExpectMatches(Reference(c, sum, ToRef(weights)), norm.AddAndNormalize(x, r), dtype);
      EXPECT_TRUE(at::equal(r, sum));
    }

    // Each stored tensor is required: leaving one out names it.
    for (const std::string& name : names) {
      std::map<std::string, at::Tensor> partial = tensors;
      partial.erase(prefix + "." + name);
      WeightStore incomplete("broken.safetensors", partial);
      try {
        Norm broken(c, d, incomplete, prefix);
        ADD_FAILURE() << "no error for a missing " << name;
      } catch (const ModelLoadError& e) {
        EXPECT_NE(std::string(e.what()).find(prefix + "." + name), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("broken.safetensors"), std::string::npos) << e.what();
      }
    }
    // A vector of the wrong size names the tensor too.
    std::map<std::string, at::Tensor> wrong = tensors;
    wrong[prefix + ".weight"] = at::ones({d + 1});
    WeightStore wrong_store("wrong.safetensors", wrong);
    try {
      Norm broken(c, d, wrong_store, prefix);
      ADD_FAILURE() << "no error for a weight of the wrong size";
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find(prefix + ".weight"), std::string::npos) << e.what();
    }
  }
}

// The row kernels of both ISAs (AVX2 when the CPU has it, and the generic build) write
// every element of a poisoned output, and only those: NaN inside y, a sentinel around it.
TEST_P(NormVariantTest, PoisonedOutputBothKernels) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const NormConfig& c = GetParam().config;
  struct RestoreKernels {
    ~RestoreKernels() { cpu::ForceGenericKernels(false); }
  } restore;
  for (bool generic : {false, true}) {
    cpu::ForceGenericKernels(generic);
    SCOPED_TRACE(std::string("row kernels: ") + cpu::KernelIsa());
    if (generic) EXPECT_STREQ(cpu::KernelIsa(), "generic");
    for (int64_t d : kDims) {
      if (!Supports(c, d)) continue;
      const NormWeights weights = RandomWeights(c, d, gen);
      const NormParams params = FoldNorm(c, d, weights);
      const RefWeights ref = ToRef(weights);
      for (at::ScalarType dtype : kDtypes) {
        SCOPED_TRACE(Describe(dtype, {7, d}));
        const at::Tensor x = RandomInput({7, d}, gen).to(dtype);
        const RefResult expected = Reference(c, x, ref);

        // A contiguous output full of NaN.
        const at::Tensor y = at::full({7, d}, NAN, at::TensorOptions().dtype(dtype));
        NormForwardInto(x, params, y);
        EXPECT_FALSE(at::isnan(y).any().item<bool>()) << "an element was not written";
        ExpectMatches(expected, y, dtype);

        // The output as rows of a wider buffer: the gaps keep their sentinel.
        const at::Tensor big = at::full({7, d + 9}, -96.0, at::TensorOptions().dtype(dtype));
        const at::Tensor y_view = big.narrow(1, 4, d);
        y_view.fill_(NAN);
        NormForwardInto(x, params, y_view);
        ExpectMatches(expected, y_view, dtype);
        EXPECT_TRUE(at::all(big.narrow(1, 0, 4) == -96.0).item<bool>()) << "wrote before a row";
        EXPECT_TRUE(at::all(big.narrow(1, 4 + d, 5) == -96.0).item<bool>()) << "wrote after a row";

        // Rows that do not share one stride (a slice of a 3-D tensor), in and out.
        const at::Tensor x3 =
            RandomInput({2, 5, d + 3}, gen).to(dtype).narrow(1, 0, 4).narrow(2, 0, d);
        const at::Tensor big3 = at::full({2, 5, d + 2}, -96.0, at::TensorOptions().dtype(dtype));
        const at::Tensor y3 = big3.narrow(1, 1, 4).narrow(2, 1, d);
        y3.fill_(NAN);
        NormForwardInto(x3, params, y3);
        ExpectMatches(Reference(c, x3.contiguous(), ref), y3, dtype);
        EXPECT_TRUE(at::all(big3.narrow(1, 0, 1) == -96.0).item<bool>());
        EXPECT_TRUE(at::all(big3.narrow(2, 0, 1) == -96.0).item<bool>());

        // The fused form into a poisoned output, with a residual that is a slice.
        const at::Tensor r_big = RandomInput({7, d + 6}, gen).to(dtype);
        const at::Tensor r = r_big.narrow(1, 3, d);
        r.copy_((RandomInput({7, d}, gen) - x.to(at::kFloat)).to(dtype));  // x + r off zero
        const at::Tensor r_left = r_big.narrow(1, 0, 3).clone();
        const at::Tensor sum = r + x;
        const at::Tensor y2 = at::full({7, d}, NAN, at::TensorOptions().dtype(dtype));
        NormForwardResidualInto(x, r, params, y2);
        EXPECT_TRUE(at::equal(r, sum)) << "residual slice not updated to x + r";
        EXPECT_TRUE(at::equal(r_big.narrow(1, 0, 3), r_left)) << "wrote outside the residual";
        ExpectMatches(Reference(c, sum, ref), y2, dtype);
      }
    }
  }
}

// Aliasing and mismatched outputs are refused, not computed into.
TEST(NormOpTest, RejectsBadOutputs) {
  c10::InferenceMode guard;
  NormConfig c;
  NormWeights w;
  w.weight = at::ones({8});
  w.bias = at::zeros({8});
  const NormParams params = FoldNorm(c, 8, w);
  const at::Tensor x = at::randn({3, 8});
  EXPECT_ANY_THROW(NormForwardInto(x, params, x));                              // y is x
  EXPECT_ANY_THROW(NormForwardInto(x, params, at::empty({3, 8}, at::kHalf)));   // dtype
  EXPECT_ANY_THROW(NormForwardInto(x, params, at::empty({3, 9})));              // shape
  EXPECT_ANY_THROW(NormForwardInto(x, params, at::empty({8}).expand({3, 8})));  // rows overlap
  EXPECT_ANY_THROW(NormForward(at::randn({3, 7}), params));                     // d != channels
  EXPECT_ANY_THROW(NormForward(at::randn({3, 8}, at::kDouble), params));        // float64 input
  const at::Tensor r = at::randn({3, 8});
  EXPECT_ANY_THROW(NormForwardResidualInto(x, r, params, r));  // y aliases the residual
  EXPECT_ANY_THROW(NormForwardResidual(x, at::randn({3, 8}, at::kHalf), params));
  // Empty inputs are fine.
  EXPECT_EQ(NormForward(at::randn({0, 8}), params).numel(), 0);
}

INSTANTIATE_TEST_SUITE_P(Variants, NormVariantTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<NormCase>& info) {
                           return info.param.name;
                         });

TEST(NormTest, TensorNamesPerKind) {
  NormConfig c;
  c.kind = NormKind::kLayerNorm;
  EXPECT_EQ(NormTensorNames(c), (std::vector<std::string>{"weight", "bias"}));
  c.kind = NormKind::kRMSNorm;
  c.bias = false;
  EXPECT_EQ(NormTensorNames(c), (std::vector<std::string>{"weight"}));
  c.kind = NormKind::kCRMSNorm;
  EXPECT_EQ(NormTensorNames(c), (std::vector<std::string>{"weight"}));
  c.kind = NormKind::kPowerNorm;
  EXPECT_EQ(NormTensorNames(c), (std::vector<std::string>{"weight", "bias", "running_phi"}));
  c.kind = NormKind::kBatchNorm;
  EXPECT_EQ(NormTensorNames(c),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var"}));
}

// Pre-CRMSNorm's identity: on a zero-mean row of d + 1 channels, CRMSNorm of its first d
// gives RMSNorm's output on those d (same gain and eps), in fp32, for odd and even widths.
TEST(NormTest, CRMSNormOfACompressedRowIsRMSNormOfTheFullRow) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (int64_t d : {2, 33, 255, 256, 1024}) {
    SCOPED_TRACE("d + 1 = " + std::to_string(d));
    const at::Tensor full = RandomInput({9, d}, gen);
    const at::Tensor zero_mean = (full.to(at::kDouble) - full.to(at::kDouble).mean(1, true));
    const at::Tensor x = zero_mean.to(at::kFloat);
    NormConfig rms = Make(NormKind::kRMSNorm);
    rms.bias = false;
    NormConfig crms = Make(NormKind::kCRMSNorm);
    crms.bias = false;
    NormWeights w;
    w.weight = at::empty({d}, at::kFloat).normal_(1.0, 0.3, gen);
    const at::Tensor expected = NormForward(x, FoldNorm(rms, d, w)).narrow(1, 0, d - 1);
    NormWeights head;
    head.weight = w.weight.narrow(0, 0, d - 1);
    const at::Tensor got = NormForward(x.narrow(1, 0, d - 1), FoldNorm(crms, d - 1, head));
    EXPECT_LE((got - expected).abs().max().item<double>(), 1e-5);
  }
}

TEST(NormTest, PartialChannels) {
  NormConfig c;
  c.kind = NormKind::kPartialRMSNorm;
  c.partial = 0.0625;
  c.partial_round_up = true;
  EXPECT_EQ(PartialChannels(c, 512), 32);
  EXPECT_EQ(PartialChannels(c, 33), 3);  // ceil(2.0625)
  EXPECT_EQ(PartialChannels(c, 1), 1);
  c.partial_round_up = false;
  EXPECT_EQ(PartialChannels(c, 33), 2);  // floor(2.0625)
  EXPECT_EQ(PartialChannels(c, 4097), 256);
  EXPECT_EQ(PartialChannels(c, 3), 1);  // floor gives 0; one channel at least
}

TEST(NormTest, PowerNormGroupsMustDivide) {
  c10::InferenceMode guard;
  NormConfig c;
  c.kind = NormKind::kPowerNorm;
  c.groups = 3;
  NormWeights w;
  w.weight = at::ones({8});
  w.bias = at::zeros({8});
  w.running_phi = at::ones({8});
  EXPECT_THROW(FoldNorm(c, 8, w), ModelLoadError);
}

TEST(NormTest, NormKindNames) {
  for (NormKind kind : {NormKind::kLayerNorm, NormKind::kRMSNorm, NormKind::kPartialRMSNorm,
                        NormKind::kPowerNorm, NormKind::kBatchNorm, NormKind::kCRMSNorm}) {
    const auto parsed = ParseNormKind(NormKindName(kind));
    ASSERT_TRUE(parsed.has_value()) << NormKindName(kind);
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_EQ(NormKindName(NormKind::kPowerNorm), "powernorm");
  EXPECT_EQ(NormKindName(NormKind::kCRMSNorm), "crmsnorm");
  EXPECT_FALSE(ParseNormKind("LayerNorm").has_value());
  EXPECT_FALSE(ParseNormKind("groupnorm").has_value());
}

}  // namespace
}  // namespace normserve
