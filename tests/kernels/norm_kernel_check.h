// The float64 reference and the checks shared by the CPU kernel tests (norm_kernel_test.cc)
// and the GPU tests (tests/gpu/gpu_norm_test.cc): random problems on raw host buffers in the
// kernels' layout (norm_kernels.h), outputs and row gaps poisoned with NaN, and a reference
// written here from DESIGN.md section 3 with its own dtype rounding (none of the library's
// conversion code). No torch here: the GPU tests build without it.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "models/norm/norm_kernels.h"

namespace normserve::kernel_test {

// ---- dtype rounding and encoding, independent of the kernels ---------------------------------

// Rounds v to the nearest value with `mantissa` explicit bits and minimum normal exponent
// `min_exp` (ties to even: nearbyint in the default rounding mode), as a double.
inline double RoundTo(double v, int mantissa, int min_exp, double overflow) {
  if (std::isnan(v) || v == 0) return v;
  const double a = std::fabs(v);
  if (a >= overflow) return std::copysign(std::numeric_limits<double>::infinity(), v);
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  const int exponent = std::max(e - 1, min_exp);
  const double ulp = std::ldexp(1.0, exponent - mantissa);
  return std::copysign(std::nearbyint(a / ulp) * ulp, v);
}

inline double RoundToDtype(double v, NormDtype dtype) {
  switch (dtype) {
    case NormDtype::kFloat32:
      return static_cast<double>(static_cast<float>(v));
    case NormDtype::kFloat16:
      return RoundTo(v, 10, -14, 65520.0);
    case NormDtype::kBFloat16:
      return RoundTo(v, 7, -126, 3.3961775292304459e38);  // (2 - 2^-8) * 2^127
  }
  return v;
}

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Bits of a value already representable in the dtype.
inline uint16_t EncodeHalf(double v) {
  const float f = static_cast<float>(v);  // exact
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const double a = std::fabs(v);
  if (std::isnan(v)) return 0x7e00;
  if (std::isinf(v)) return sign | 0x7c00;
  if (a < std::ldexp(1.0, -14)) return sign | static_cast<uint16_t>(a * std::ldexp(1.0, 24));
  const int exponent = static_cast<int>((u >> 23) & 0xffu) - 127 + 15;
  return sign | static_cast<uint16_t>(exponent << 10) | static_cast<uint16_t>((u >> 13) & 0x3ffu);
}

inline double DecodeHalf(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) {
    return mantissa ? std::numeric_limits<double>::quiet_NaN()
                    : sign * std::numeric_limits<double>::infinity();
  }
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

inline uint16_t EncodeBf16(double v) {
  if (std::isnan(v)) return 0x7fc0;
  return static_cast<uint16_t>(FloatBits(static_cast<float>(v)) >> 16);  // exact
}

inline double DecodeBf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A typed view of a raw host buffer.
struct Buffer {
  NormDtype dtype = NormDtype::kFloat32;
  std::vector<unsigned char> bytes;

  Buffer() = default;
  Buffer(NormDtype t, int64_t elements)
      : dtype(t), bytes(static_cast<size_t>(elements) * NormDtypeSize(t)) {}
  int64_t size() const { return static_cast<int64_t>(bytes.size()) / NormDtypeSize(dtype); }
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }

  double Get(int64_t i) const {
    if (dtype == NormDtype::kFloat32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    return dtype == NormDtype::kFloat16 ? DecodeHalf(h) : DecodeBf16(h);
  }
  // Stores v rounded to the dtype (NaN stays NaN).
  void Set(int64_t i, double v) {
    const double r = RoundToDtype(v, dtype);
    if (dtype == NormDtype::kFloat32) {
      const float f =
          static_cast<float>(std::isnan(v) ? std::numeric_limits<float>::quiet_NaN() : r);
      std::memcpy(bytes.data() + 4 * i, &f, 4);
      return;
    }
    const uint16_t h = dtype == NormDtype::kFloat16 ? EncodeHalf(r) : EncodeBf16(r);
    std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
  void Poison() {
    for (int64_t i = 0; i < size(); ++i) Set(i, std::numeric_limits<double>::quiet_NaN());
  }
};

// ---- Variants ------------------------------------------------------------------------------

struct Variant {
  std::string name;
  RowStatistic statistic;
  bool shift = true;
  bool eps_inside_sqrt = true;
  double eps = 1e-5;
  double partial = 0;  // pRMSNorm: k = ceil(partial * d)
  bool powernorm = false;
};

inline std::vector<Variant> Variants() {
  return {
      {"layernorm", RowStatistic::kMeanVariance, true, true, 1e-5, 0, false},
      {"rmsnorm", RowStatistic::kMeanSquare, false, true, 1e-6, 0, false},
      {"rmsnorm_bias_eps_outside", RowStatistic::kMeanSquare, true, false, 1e-8, 0, false},
      {"prmsnorm", RowStatistic::kMeanSquare, true, true, 1e-5, 0.0625, false},
      {"powernorm", RowStatistic::kGroupMeanSquare, true, true, 1e-5, 0, true},
      {"batchnorm", RowStatistic::kNone, true, true, 1e-5, 0, false},
  };
}

// PowerNorm's group count for d: the largest of a few that divides it.
inline int64_t GroupsFor(int64_t d) {
  for (int64_t g : {8, 17, 4, 3, 2}) {
    if (d % g == 0 && d / g >= 1) return g;
  }
  return 1;
}

inline int64_t PartialK(double p, int64_t d) {
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(p * static_cast<double>(d))), 1, d);
}

inline std::string DtypeName(NormDtype t) { return NormDtypeName(t); }

// ---- Problems ------------------------------------------------------------------------------

struct Problem {
  Variant variant;
  NormDtype dtype = NormDtype::kFloat32;
  bool fused = false;
  int64_t rows = 0, d = 0, x_stride = 0, r_stride = 0, y_stride = 0;
  int64_t stat_channels = 0, groups = 1;
  Buffer x, r, y;  // r: empty for the plain form
  std::vector<float> scale, shift;

  std::string Describe() const {
    std::ostringstream s;
    s << variant.name << (fused ? " fused" : " plain") << " " << DtypeName(dtype)
      << " rows=" << rows << " d=" << d << " strides x/r/y=" << x_stride << "/" << r_stride << "/"
      << y_stride << " groups=" << groups << " k=" << stat_channels;
    return s.str();
  }

  // The kernel arguments over the given (host or device) copies of the buffers.
  NormKernelArgs Args(const void* x_data, void* r_data, void* y_data, const float* scale_data,
                      const float* shift_data) const {
    NormKernelArgs a;
    a.x = x_data;
    a.x_stride = x_stride;
    a.residual = fused ? r_data : nullptr;
    a.residual_stride = r_stride;
    a.y = y_data;
    a.y_stride = y_stride;
    a.rows = rows;
    a.d = d;
    a.dtype = dtype;
    a.statistic = variant.statistic;
    a.stat_channels = stat_channels;
    a.groups = groups;
    a.eps = static_cast<float>(variant.eps);
    a.eps_inside_sqrt = variant.eps_inside_sqrt;
    a.scale = scale_data;
    a.shift = variant.shift ? shift_data : nullptr;
    return a;
  }
  NormKernelArgs HostArgs() {
    return Args(x.data(), fused ? r.data() : nullptr, y.data(), scale.data(), shift.data());
  }
};

// Fresh random inputs: rows with their own offset and spread, so that mean and RMS vary;
// gaps between rows and all of y poisoned with NaN.
inline Problem MakeProblem(const Variant& v, NormDtype dtype, bool fused, int64_t rows, int64_t d,
                           int64_t x_stride, int64_t r_stride, int64_t y_stride,
                           std::mt19937_64& rng) {
  Problem p;
  p.variant = v;
  p.dtype = dtype;
  p.fused = fused;
  p.rows = rows;
  p.d = d;
  p.x_stride = x_stride;
  p.r_stride = r_stride;
  p.y_stride = y_stride;
  p.stat_channels =
      v.partial > 0 ? PartialK(v.partial, d) : (v.statistic == RowStatistic::kMeanSquare ? d : 0);
  p.groups = v.powernorm ? GroupsFor(d) : 1;
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const auto fill = [&](Buffer& b, int64_t stride) {
    b = Buffer(dtype, (rows - 1) * stride + d);
    b.Poison();
    for (int64_t i = 0; i < rows; ++i) {
      const double spread = 0.2 + 3.0 * uniform(rng);
      const double offset = -1.5 + 3.0 * uniform(rng);
      for (int64_t c = 0; c < d; ++c) b.Set(i * stride + c, offset + spread * normal(rng));
    }
  };
  fill(p.x, x_stride);
  if (fused) fill(p.r, r_stride);
  p.y = Buffer(dtype, (rows - 1) * y_stride + d);
  p.y.Poison();
  p.scale.resize(d);
  p.shift.resize(d);
  for (int64_t c = 0; c < d; ++c) {
    p.scale[c] = static_cast<float>(1.0 + 0.3 * normal(rng));
    p.shift[c] = static_cast<float>(0.3 * normal(rng));
  }
  return p;
}

// ---- The reference -------------------------------------------------------------------------

inline double InverseRoot(double s, double eps, bool inside) {
  return inside ? 1.0 / std::sqrt(s + eps) : 1.0 / (std::sqrt(s) + eps);
}

// y = (h - mu) * rstd * scale + shift per DESIGN.md section 3 on the folded parameters.
inline std::vector<double> ReferenceRow(const Problem& p, const std::vector<double>& h) {
  const int64_t d = p.d;
  const Variant& v = p.variant;
  std::vector<double> y(d);
  const auto affine = [&](int64_t c, double normalized) {
    return normalized * p.scale[c] + (v.shift ? p.shift[c] : 0.0);
  };
  switch (v.statistic) {
    case RowStatistic::kNone:
      for (int64_t c = 0; c < d; ++c) y[c] = affine(c, h[c]);
      break;
    case RowStatistic::kMeanVariance: {
      double mean = 0;
      for (double e : h) mean += e;
      mean /= static_cast<double>(d);
      double var = 0;
      for (double e : h) var += (e - mean) * (e - mean);
      var /= static_cast<double>(d);
      const double rstd = InverseRoot(var, v.eps, v.eps_inside_sqrt);
      for (int64_t c = 0; c < d; ++c) y[c] = affine(c, (h[c] - mean) * rstd);
      break;
    }
    case RowStatistic::kMeanSquare: {
      const int64_t k = p.stat_channels;
      double ms = 0;
      for (int64_t c = 0; c < k; ++c) ms += h[c] * h[c];
      ms /= static_cast<double>(k);
      const double rstd = InverseRoot(ms, v.eps, v.eps_inside_sqrt);
      for (int64_t c = 0; c < d; ++c) y[c] = affine(c, h[c] * rstd);
      break;
    }
    case RowStatistic::kGroupMeanSquare: {
      const int64_t size = d / p.groups;
      for (int64_t g = 0; g < p.groups; ++g) {
        double ms = 0;
        for (int64_t c = g * size; c < (g + 1) * size; ++c) ms += h[c] * h[c];
        ms /= static_cast<double>(size);
        const double rstd = 1.0 / std::sqrt(ms + v.eps);
        for (int64_t c = g * size; c < (g + 1) * size; ++c) y[c] = affine(c, h[c] * rstd);
      }
      break;
    }
  }
  return y;
}

// Elementwise |got - ref| <= tol * (1 + |ref|), and ||got - ref|| / ||ref|| <= tol_norm.
struct Tolerance {
  double elementwise;
  double norm;
};
inline Tolerance ToleranceFor(NormDtype dtype) {
  switch (dtype) {
    case NormDtype::kFloat32:
      return {2e-5, 1e-5};  // fp32 statistics over up to 8192 values
    case NormDtype::kFloat16:
      return {2e-3, 1e-3};  // output rounding: half an ulp is 2^-11 relative
    case NormDtype::kBFloat16:
      return {1e-2, 8e-3};  // output rounding: half an ulp is 2^-8 relative
  }
  return {0, 0};
}

// Checks y (and r for the fused form) after a kernel run; `y_after`/`r_after` are the buffers
// as they came back, the problem holds the inputs.
inline ::testing::AssertionResult CheckProblem(const Problem& p, const Buffer& y_after,
                                               const Buffer* r_after) {
  const Tolerance tol = ToleranceFor(p.dtype);
  double err2 = 0, ref2 = 0, worst = 0;
  int64_t worst_row = -1, worst_col = -1;
  double worst_got = 0, worst_ref = 0;
  std::vector<double> h(p.d);
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t c = 0; c < p.d; ++c) {
      double v = p.x.Get(i * p.x_stride + c);
      if (p.fused) {
        // The kernel adds in fp32 and rounds to the dtype, as the unfused add would.
        const double sum =
            RoundToDtype(static_cast<double>(static_cast<float>(v) +
                                             static_cast<float>(p.r.Get(i * p.r_stride + c))),
                         p.dtype);
        const double got = r_after->Get(i * p.r_stride + c);
        if (!(got == sum)) {
          return ::testing::AssertionFailure()
                 << p.Describe() << ": residual row " << i << " col " << c << " is " << got
                 << ", expected x + r = " << sum;
        }
        v = sum;
      }
      h[c] = v;
    }
    const std::vector<double> ref = ReferenceRow(p, h);
    for (int64_t c = 0; c < p.d; ++c) {
      const double got = y_after.Get(i * p.y_stride + c);
      const double e = std::isfinite(got) ? std::fabs(got - ref[c]) : INFINITY;
      err2 += std::isfinite(e) ? e * e : INFINITY;
      ref2 += ref[c] * ref[c];
      const double scaled = e / (1.0 + std::fabs(ref[c]));
      if (!(scaled <= worst)) {
        worst = scaled;
        worst_row = i, worst_col = c, worst_got = got, worst_ref = ref[c];
      }
    }
  }
  // Gaps between rows must still hold the poison: nothing wrote outside the rows.
  for (int64_t i = 0; i + 1 < p.rows; ++i) {
    for (int64_t c = p.d; c < p.y_stride; ++c) {
      if (!std::isnan(y_after.Get(i * p.y_stride + c))) {
        return ::testing::AssertionFailure()
               << p.Describe() << ": wrote y outside row " << i << " (col " << c << ")";
      }
    }
    if (p.fused) {
      for (int64_t c = p.d; c < p.r_stride; ++c) {
        if (!std::isnan(r_after->Get(i * p.r_stride + c))) {
          return ::testing::AssertionFailure()
                 << p.Describe() << ": wrote the residual outside row " << i;
        }
      }
    }
  }
  const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  if (!(worst <= tol.elementwise) || !(rel <= tol.norm)) {
    return ::testing::AssertionFailure()
           << p.Describe() << ": worst element row " << worst_row << " col " << worst_col << " got "
           << worst_got << " reference " << worst_ref << " (scaled error " << worst
           << ", tolerance " << tol.elementwise << "); ||err||/||ref|| = " << rel << " (tolerance "
           << tol.norm << ")";
  }
  return ::testing::AssertionSuccess();
}

const int64_t kDims[] = {1, 3, 8, 33, 127, 1000, 4097, 8192};
const int64_t kRows[] = {1, 3, 33};
const NormDtype kDtypes[] = {NormDtype::kFloat32, NormDtype::kFloat16, NormDtype::kBFloat16};

// Row strides to test for d: contiguous, a misaligned pad, and a 16-byte aligned pad.
inline std::vector<int64_t> StridesFor(int64_t d) { return {d, d + 3, (d + 7) / 8 * 8 + 8}; }

inline uint64_t FreshSeed() {
  if (const char* env = std::getenv("NORMSERVE_TEST_SEED")) return std::stoull(env);
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace normserve::kernel_test
