// The CPU row kernels' body, included once by each per-ISA source inside its own namespace
// (NORMSERVE_CPU_ISA names it), so that code compiled with -mavx2 never stands in for the
// baseline build: every function here is internal to its translation unit, and nothing from
// the standard library is instantiated here (its inline functions would be shared between the
// two builds by the linker).
//
// Loop shapes are chosen for GCC's vectorizer (checked with -fopt-info-vec-optimized, see
// docs/kernels.md): plain float arrays behind __restrict pointers; 16-bit rows are converted to
// a float row buffer first; reductions keep kLanes independent partial sums, so that they
// vectorize without -ffast-math's reassociation and the result does not depend on the ISA
// beyond rounding of the final lane sum.
#ifndef NORMSERVE_CPU_ISA
#error "define NORMSERVE_CPU_ISA before including norm_cpu_rows_impl.h"
#endif

#include <cstdint>

#include "models/norm/norm_cpu_rows.h"
#include "models/norm/norm_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace normserve::cpu::NORMSERVE_CPU_ISA {
namespace {

constexpr int kLanes = 32;  // 4 AVX registers, 8 SSE registers of partial sums

using u16 = uint16_t;
using u32 = uint32_t;

inline float BitsToFloat(u32 u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}
inline u32 FloatToBits(float f) {
  u32 u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}

// ---- Scalar conversions between the storage dtype and fp32 ----------------------------------

inline float Bf16BitsToFloat(u16 b) { return BitsToFloat(static_cast<u32>(b) << 16); }

// Round to nearest even, for values that are not NaN (or NaNs whose low 16 bits are zero).
inline u16 RoundToBf16Bits(float f) {
  const u32 u = FloatToBits(f);
  return static_cast<u16>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Round to nearest even; NaN stays NaN (quiet, sign kept), which rounding alone could turn
// into infinity or zero. Branch-free: it vectorizes.
inline u16 FloatToBf16Bits(float f) {
  const u32 u = FloatToBits(f);
  const u32 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<u16>(f != f ? (u >> 16) | 0x0040u : rounded);
}

// IEEE half <-> float without F16C (exact; round to nearest even), after F. Giesen's
// branch-free conversions. GCC 12 vectorizes neither these nor _Float16 casts: with F16C the
// bulk goes through vcvtph2ps / vcvtps2ph (8 per instruction) and these do the tails.
inline float HalfBitsToFloat(u32 h) {
  u32 o = (h & 0x7fffu) << 13;
  const u32 exponent = o & (0x7c00u << 13);
  o += (127u - 15u) << 23;
  const u32 inf_nan = o + ((128u - 16u) << 23);
  const u32 subnormal = FloatToBits(BitsToFloat(o + (1u << 23)) - BitsToFloat(113u << 23));
  const u32 r = exponent == (0x7c00u << 13) ? inf_nan : (exponent == 0 ? subnormal : o);
  return BitsToFloat(r | ((h & 0x8000u) << 16));
}

inline u16 FloatToHalfBits(float f) {
  u32 u = FloatToBits(f);
  const u32 sign = u & 0x80000000u;
  u ^= sign;
  constexpr u32 kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  const u32 big = u > (255u << 23) ? 0x7e00u : 0x7c00u;  // NaN : overflow to inf
  const u32 subnormal = FloatToBits(BitsToFloat(u) + BitsToFloat(kDenormMagic)) - kDenormMagic;
  const u32 normal = (u + ((15u - 127u) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const u32 o = u >= ((127u + 16u) << 23) ? big : (u < (113u << 23) ? subnormal : normal);
  return static_cast<u16>(o | (sign >> 16));
}

// ---- Reductions -----------------------------------------------------------------------------

inline float CombineLanes(float* acc) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

float Sum(const float* __restrict x, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i];
  return CombineLanes(acc) + tail;
}

float SumSquares(const float* __restrict x, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] * x[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i] * x[i];
  return CombineLanes(acc) + tail;
}

float SumSquaredDeviations(const float* __restrict x, int64_t n, float mean) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float c = x[i + j] - mean;
      acc[j] += c * c;
    }
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += (x[i] - mean) * (x[i] - mean);
  return CombineLanes(acc) + tail;
}

// Sum and sum of squares in one pass (CRMSNorm's statistic), kLanes partial sums of each;
// blocks of 8 before the scalar tail, so that an odd width such as d - 1 = 511 leaves at most
// 7 scalar steps.
void SumAndSumSquares(const float* __restrict x, int64_t n, float* sum, float* squares) {
  float s[kLanes] = {};
  float q[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) s[j] += x[i + j];
    for (int j = 0; j < kLanes; ++j) q[j] += x[i + j] * x[i + j];
  }
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) s[j] += x[i + j];
    for (int j = 0; j < 8; ++j) q[j] += x[i + j] * x[i + j];
  }
  float tail_sum = 0.0f, tail_squares = 0.0f;
  for (; i < n; ++i) {
    tail_sum += x[i];
    tail_squares += x[i] * x[i];
  }
  *sum = CombineLanes(s) + tail_sum;
  *squares = CombineLanes(q) + tail_squares;
}

inline float InverseRoot(float s, float eps, bool eps_inside_sqrt) {
  return eps_inside_sqrt ? 1.0f / __builtin_sqrtf(s + eps) : 1.0f / (__builtin_sqrtf(s) + eps);
}

// ---- Storage types: load a row to fp32, the fused add, and the normalizing store ------------
//
// Store(y, n, f) writes y[i] = f(i) converted to the storage type, in one pass: the affine map
// and the conversion share a loop, so a 16-bit row is read once (converted to the fp32 row
// buffer), and written once.

struct F32 {
  using T = float;
  template <typename F>
  static void Store(float* __restrict y, int64_t n, F f) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(i);
  }
  // r = x + r; h = r.
  static void AddRound(const float* __restrict x, float* __restrict r, float* __restrict,
                       int64_t n) {
    for (int64_t i = 0; i < n; ++i) r[i] = x[i] + r[i];
  }
};

struct BF16 {
  using T = u16;
  static void Load(const u16* __restrict x, float* __restrict h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) h[i] = Bf16BitsToFloat(x[i]);
  }
  // Rounding without the NaN select costs a third fewer instructions; a NaN with a payload in
  // the low 16 bits could carry into the sign there, so a row that holds any NaN is written
  // again the exact way (rare: a NaN in the input or the weights). With AVX2, blocks of 64
  // values computed by a vectorized loop are rounded in registers and their high halves
  // gathered by a byte shuffle: the conversion is what bounds bf16 rows on the CPU.
  template <typename F>
  static void Store(u16* __restrict y, int64_t n, F f) {
    int64_t i = 0;
    u32 any_nan = 0;
#if defined(__AVX2__)
    constexpr int kBlock = 64;
    const __m256i round_bias = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i high_halves =
        _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10,
                         11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256 nan = _mm256_setzero_ps();
    const auto rounded = [&](__m256 v) {
      const __m256i u = _mm256_castps_si256(v);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      return _mm256_shuffle_epi8(_mm256_add_epi32(u, _mm256_add_epi32(round_bias, lsb)),
                                 high_halves);
    };
    for (; i + kBlock <= n; i += kBlock) {
      float o[kBlock];
      for (int j = 0; j < kBlock; ++j) o[j] = f(i + j);
      for (int j = 0; j < kBlock; j += 16) {
        const __m256 a = _mm256_loadu_ps(o + j);
        const __m256 b = _mm256_loadu_ps(o + j + 8);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        // Per 128-bit lane: [a's 4 high halves | b's]; then the qwords in element order.
        const __m256i ab = _mm256_unpacklo_epi64(rounded(a), rounded(b));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i + j),
                            _mm256_permute4x64_epi64(ab, 0xd8));
      }
    }
    any_nan = _mm256_movemask_ps(nan) != 0 ? 1u : 0u;
#endif
    for (; i < n; ++i) {
      const float v = f(i);
      y[i] = RoundToBf16Bits(v);
      any_nan |= v != v ? 1u : 0u;
    }
    if (any_nan != 0) {
      for (int64_t k = 0; k < n; ++k) y[k] = FloatToBf16Bits(f(k));
    }
  }
  // r = round(x + r) (the fp32 sum rounded to bf16, as the unfused add), h = float(r). A NaN
  // sum here is one of the NaN operands or the default NaN, whose low 16 bits are zero:
  // rounding keeps it a NaN, no select needed.
  static void AddRound(const u16* __restrict x, u16* __restrict r, float* __restrict h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const u16 b = RoundToBf16Bits(Bf16BitsToFloat(x[i]) + Bf16BitsToFloat(r[i]));
      r[i] = b;
      h[i] = Bf16BitsToFloat(b);
    }
  }
};

struct F16 {
  using T = u16;
  static void Load(const u16* __restrict x, float* __restrict h, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(h + i,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
    }
#endif
    for (; i < n; ++i) h[i] = HalfBitsToFloat(x[i]);
  }
  template <typename F>
  static void Store(u16* __restrict y, int64_t n, F f) {
    int64_t i = 0;
#if defined(__F16C__)
    constexpr int kBlock = 64;  // computed by a vectorized loop into L1, then converted
    for (; i + kBlock <= n; i += kBlock) {
      float o[kBlock];
      for (int j = 0; j < kBlock; ++j) o[j] = f(i + j);
      for (int j = 0; j < kBlock; j += 8) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(o + j), _MM_FROUND_TO_NEAREST_INT));
      }
    }
#endif
    for (; i < n; ++i) y[i] = FloatToHalfBits(f(i));
  }
  static void AddRound(const u16* __restrict x, u16* __restrict r, float* __restrict h, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      const __m256 sum =
          _mm256_add_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))),
                        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i))));
      const __m128i rounded = _mm256_cvtps_ph(sum, _MM_FROUND_TO_NEAREST_INT);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(r + i), rounded);
      _mm256_storeu_ps(h + i, _mm256_cvtph_ps(rounded));
    }
#endif
    for (; i < n; ++i) {
      const u16 b = FloatToHalfBits(HalfBitsToFloat(x[i]) + HalfBitsToFloat(r[i]));
      r[i] = b;
      h[i] = HalfBitsToFloat(b);
    }
  }
};

// y = (h - mean) * rstd * scale + shift over n channels. (Not h * rstd + (-mean * rstd): that
// cancels badly when h is close to the mean, e.g. every LayerNorm row of one channel.)
template <typename S>
void AffineStore(const float* __restrict h, int64_t n, float mean, float rstd,
                 const float* __restrict scale, const float* __restrict shift,
                 typename S::T* __restrict y) {
  if (shift != nullptr) {
    S::Store(y, n, [=](int64_t i) { return (h[i] - mean) * rstd * scale[i] + shift[i]; });
  } else {
    S::Store(y, n, [=](int64_t i) { return (h[i] - mean) * rstd * scale[i]; });
  }
}

// BatchNorm's folded map: y = h * scale + shift.
template <typename S>
void ScaleShiftStore(const float* __restrict h, int64_t n, const float* __restrict scale,
                     const float* __restrict shift, typename S::T* __restrict y) {
  if (shift != nullptr) {
    S::Store(y, n, [=](int64_t i) { return h[i] * scale[i] + shift[i]; });
  } else {
    S::Store(y, n, [=](int64_t i) { return h[i] * scale[i]; });
  }
}

// Normalizes the fp32 row h into y.
template <typename S>
void NormalizeRow(const NormKernelArgs& a, const float* __restrict h, typename S::T* __restrict y) {
  const int64_t d = a.d;
  switch (a.statistic) {
    case RowStatistic::kNone:
      ScaleShiftStore<S>(h, d, a.scale, a.shift, y);
      return;
    case RowStatistic::kMeanVariance: {
      const float inv_d = 1.0f / static_cast<float>(d);
      const float mean = Sum(h, d) * inv_d;
      const float var = SumSquaredDeviations(h, d, mean) * inv_d;
      AffineStore<S>(h, d, mean, InverseRoot(var, a.eps, a.eps_inside_sqrt), a.scale, a.shift, y);
      return;
    }
    case RowStatistic::kMeanSquare: {
      const int64_t k = a.stat_channels > 0 ? a.stat_channels : d;
      const float ms = SumSquares(h, k) / static_cast<float>(k);
      AffineStore<S>(h, d, 0.0f, InverseRoot(ms, a.eps, a.eps_inside_sqrt), a.scale, a.shift, y);
      return;
    }
    case RowStatistic::kCompressedMeanSquare: {
      // The implied channel d is -sum(h): its square joins the sum of squares.
      float sum = 0.0f, squares = 0.0f;
      SumAndSumSquares(h, d, &sum, &squares);
      const float ms = (squares + sum * sum) / static_cast<float>(d + 1);
      AffineStore<S>(h, d, 0.0f, InverseRoot(ms, a.eps, a.eps_inside_sqrt), a.scale, a.shift, y);
      return;
    }
    case RowStatistic::kGroupMeanSquare: {
      const int64_t size = d / a.groups;
      const float inv_size = 1.0f / static_cast<float>(size);
      for (int64_t g = 0; g < a.groups; ++g) {
        const int64_t o = g * size;
        const float rstd = InverseRoot(SumSquares(h + o, size) * inv_size, a.eps, true);
        AffineStore<S>(h + o, size, 0.0f, rstd, a.scale + o,
                       a.shift != nullptr ? a.shift + o : nullptr, y + o);
      }
      return;
    }
  }
}

// Copies a finished row from the L1 row buffer to y with non-temporal stores: y bypasses the
// caches, so a large output costs no read-for-ownership of its lines (a third of the traffic
// of a plain store stream), as a large memcpy does. Callers fence once at the end.
void StreamRow(void* dst, const void* src, int64_t bytes) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
#if defined(__AVX__) || defined(__SSE2__)
#if defined(__AVX__)
  constexpr int kWidth = 32;
#else
  constexpr int kWidth = 16;
#endif
  const int64_t head =
      (kWidth - static_cast<int64_t>(reinterpret_cast<uintptr_t>(d) % kWidth)) % kWidth;
  if (head >= bytes) {
    __builtin_memcpy(d, s, bytes);
    return;
  }
  __builtin_memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  for (; bytes >= kWidth; bytes -= kWidth, d += kWidth, s += kWidth) {
#if defined(__AVX__)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(d),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
#else
    _mm_stream_si128(reinterpret_cast<__m128i*>(d),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
#endif
  }
#endif
  __builtin_memcpy(d, s, bytes);
}

inline void StreamFence() {
#if defined(__AVX__) || defined(__SSE2__)
  _mm_sfence();
#endif
}

void RowsF32(const NormKernelArgs& a, int64_t begin, int64_t end, float* out, bool stream) {
  for (int64_t row = begin; row < end; ++row) {
    const float* x = static_cast<const float*>(a.x) + row * a.x_stride;
    float* y = static_cast<float*>(a.y) + row * a.y_stride;
    const float* h = x;
    if (a.residual != nullptr) {
      float* r = static_cast<float*>(a.residual) + row * a.residual_stride;
      F32::AddRound(x, r, nullptr, a.d);
      h = r;
    }
    if (stream) {
      NormalizeRow<F32>(a, h, out);
      StreamRow(y, out, a.d * static_cast<int64_t>(sizeof(float)));
    } else {
      NormalizeRow<F32>(a, h, y);
    }
  }
}

template <typename S>
void Rows16(const NormKernelArgs& a, int64_t begin, int64_t end, float* h, u16* out, bool stream) {
  for (int64_t row = begin; row < end; ++row) {
    const u16* x = static_cast<const u16*>(a.x) + row * a.x_stride;
    u16* y = static_cast<u16*>(a.y) + row * a.y_stride;
    if (a.residual != nullptr) {
      // h = x + r rounded to the storage dtype as the unfused add would round it, stored to r,
      // and normalized as rounded.
      S::AddRound(x, static_cast<u16*>(a.residual) + row * a.residual_stride, h, a.d);
    } else {
      S::Load(x, h, a.d);
    }
    if (stream) {
      NormalizeRow<S>(a, h, out);
      StreamRow(y, out, a.d * static_cast<int64_t>(sizeof(u16)));
    } else {
      NormalizeRow<S>(a, h, y);
    }
  }
}

}  // namespace

void NormRows(const NormKernelArgs& args, int64_t begin, int64_t end, float* buffer,
              bool stream_output) {
  // buffer: [0, d) the fp32 row, [d + 16, 2d + 16) the finished output row when streaming.
  float* h = buffer;
  float* out = buffer + args.d + 16;
  switch (args.dtype) {
    case NormDtype::kFloat32:
      RowsF32(args, begin, end, out, stream_output);
      break;
    case NormDtype::kFloat16:
      Rows16<F16>(args, begin, end, h, reinterpret_cast<u16*>(out), stream_output);
      break;
    case NormDtype::kBFloat16:
      Rows16<BF16>(args, begin, end, h, reinterpret_cast<u16*>(out), stream_output);
      break;
  }
  if (stream_output) StreamFence();
}

}  // namespace normserve::cpu::NORMSERVE_CPU_ISA
