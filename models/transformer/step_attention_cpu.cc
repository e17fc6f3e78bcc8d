// The fp32 CPU kernels of step_attention.h. One task per (row, head): a dot product per
// cached key, a softmax, a weighted sum of the values; the loops over head_dim vectorize.
// The softmax accumulates in fp32, as every norm kernel does.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "models/transformer/step_attention.h"

namespace normserve::cpu {
namespace {

// out[0..dh) = softmax over n of (q . keys[t]) weighted sum of values[t]; keys and values
// hold n rows of dh floats. `scores` has room for n.
inline void AttendOne(const float* q, const float* keys, const float* values, int64_t n, int64_t dh,
                      float* scores, float* out) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) {
    const float* k = keys + t * dh;
    float dot = 0;
    for (int64_t i = 0; i < dh; ++i) dot += q[i] * k[i];
    scores[t] = dot;
    best = std::max(best, dot);
  }
  float total = 0;
  for (int64_t t = 0; t < n; ++t) {
    scores[t] = std::exp(scores[t] - best);
    total += scores[t];
  }
  const float inverse = 1.0f / total;
  std::fill(out, out + dh, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    const float p = scores[t] * inverse;
    const float* v = values + t * dh;
    for (int64_t i = 0; i < dh; ++i) out[i] += p * v[i];
  }
}

// Tasks of at least this many (row, head) pairs per thread: a pair is a few hundred
// multiply-adds, too little to wake a thread for.
constexpr int64_t kGrain = 16;

}  // namespace

void StepSelfAttention(const float* qkv, int64_t rows, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, float* keys, float* values, int64_t capacity,
                       const int64_t* slot, const int64_t* position, float* out) {
  const int64_t q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
  const int64_t row_size = q_dim + 2 * kv_dim, group = heads / kv_heads;
  const auto cached = [&](int64_t r, int64_t kv_head) {
    return (slot[r] * kv_heads + kv_head) * capacity * head_dim;
  };
  // Every new key and value first, then the attention: the query heads of a group read the
  // key that one task writes.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < kv_heads; ++g) {
      const float* row = qkv + r * row_size + q_dim + g * head_dim;
      const int64_t at = cached(r, g) + position[r] * head_dim;
      std::copy(row, row + head_dim, keys + at);
      std::copy(row + kv_dim, row + kv_dim + head_dim, values + at);
    }
  }
  at::parallel_for(0, rows * heads, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / heads, h = task % heads;
      const int64_t offset = cached(r, h / group);
      scores.resize(position[r] + 1);
      AttendOne(qkv + r * row_size + h * head_dim, keys + offset, values + offset, position[r] + 1,
                head_dim, scores.data(), out + r * q_dim + h * head_dim);
    }
  });
}

void StepCrossAttention(const float* query, int64_t rows, int64_t heads, int64_t head_dim,
                        const float* keys, const float* values, int64_t capacity,
                        const int64_t* source, const int64_t* source_length, float* out) {
  const int64_t dim = heads * head_dim;
  at::parallel_for(0, rows * heads, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / heads, h = task % heads;
      const int64_t offset = (source[r] * heads + h) * capacity * head_dim;
      scores.resize(source_length[r]);
      AttendOne(query + r * dim + h * head_dim, keys + offset, values + offset, source_length[r],
                head_dim, scores.data(), out + r * dim + h * head_dim);
    }
  });
}

}  // namespace normserve::cpu
