#include "models/decoding/step_scores.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace normserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 to about 2e-7 relative error, in a form the compiler vectorizes: 2^n by
// the exponent bits times a degree-6 polynomial on the remainder |r| <= ln2/2. Inputs below
// -87 (including -inf) give about 1e-38, negligible in a sum whose largest term is 1.
inline float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  // Rounded to the nearest integer by adding and subtracting 1.5 * 2^23 (|x * log2 e| < 126).
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace

void LogProbRows(float* logits, int64_t rows, int64_t vocab, const float* offsets,
                 const std::vector<int64_t>& never_output) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = logits + r * vocab;
    float best = kNegInf;
    int nan = 0;
#pragma omp simd reduction(max : best) reduction(| : nan)
    for (int64_t v = 0; v < vocab; ++v) {
      nan |= row[v] != row[v];
      best = row[v] > best ? row[v] : best;
    }
    if (nan || std::isinf(best)) {  // NaN, +inf, or no possible token
      std::fill(row, row + vocab, kNegInf);
      continue;
    }
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < vocab; ++v) sum += ExpNonPositive(row[v] - best);
    const float shift = (offsets ? offsets[r] : 0.0f) - best - std::log(sum);
#pragma omp simd
    for (int64_t v = 0; v < vocab; ++v) row[v] += shift;
    for (int64_t id : never_output) row[id] = kNegInf;
  }
}

void TopCandidates(const float* values, int64_t n, int64_t count, float* scores, int64_t* indices) {
  count = std::min(count, n);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float value = values[i];
    if (kept == count && !(value > scores[kept - 1])) continue;
    // Insert after every kept value that is not smaller (ties keep the lower index first).
    int64_t at = kept == count ? count - 1 : kept++;
    while (at > 0 && scores[at - 1] < value) {
      scores[at] = scores[at - 1];
      indices[at] = indices[at - 1];
      --at;
    }
    scores[at] = value;
    indices[at] = i;
  }
}

}  // namespace normserve
