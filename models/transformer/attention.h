// Multi-head attention with fairseq's parameter names (q_proj, k_proj, v_proj, out_proj)
// and a key/value cache for incremental decoding; with grouped-query attention (fewer key
// and value heads than query heads, each shared by a group of query heads), optional
// biases and rotary positions (rotary.h) where the model has them.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

#include "models/transformer/rotary.h"

namespace normserve {

class WeightStore;
struct StepRows;

// Keys and values seen so far, [batch, key/value heads, steps, head_dim] each.
struct KVCache {
  at::Tensor keys;
  at::Tensor values;
  void Reorder(const at::Tensor& index);
};

class MultiheadAttention {
 public:
  MultiheadAttention() = default;
  struct Shape {
    int64_t stream_dim;  // inputs and outputs (embed_dim - 1 in a Pre-CRMSNorm model)
    int64_t heads;       // query heads of head_dim channels each
    int64_t kv_heads;    // key/value heads; divides heads
    int64_t head_dim;
    bool bias;  // the projections have biases
  };
  MultiheadAttention(const Shape& shape, WeightStore& store, const std::string& prefix);

  // Self-attention over query [B, T, D]: appends its keys and values to `cache` (when given)
  // and attends to everything cached. `mask` is additive, broadcastable to [B, H, T, keys].
  // A rotary model passes the angles of the T positions, which turn queries and keys.
  at::Tensor SelfAttention(const at::Tensor& query, const at::Tensor& mask, KVCache* cache,
                           const RotaryAngles* angles = nullptr) const;
  // Attention to a fixed memory [B, S, D] whose keys and values are computed once and kept
  // in `cache`.
  at::Tensor CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                            const at::Tensor& mask, KVCache& cache) const;

  // The step engine's forms (step_attention.h): one new position per row [R, D], with the
  // keys and values in cache slots.
  // `angles`: a rotary model's, of rows.position; nullptr otherwise.
  at::Tensor StepSelfAttention(const at::Tensor& query, at::Tensor& keys, at::Tensor& values,
                               const StepRows& rows, const RotaryAngles* angles) const;
  at::Tensor StepCrossAttention(const at::Tensor& query, const at::Tensor& keys,
                                const at::Tensor& values, const StepRows& rows) const;
  // The keys and values of a memory [B, S, D] as the cross-attention keeps them, each
  // [B, H, S, Dh].
  std::pair<at::Tensor, at::Tensor> MemoryKeysValues(const at::Tensor& memory) const;

  void To(const at::Device& device);

 private:
  // [B, T, n * Dh] -> [B, n, T, Dh]
  at::Tensor SplitHeads(const at::Tensor& x, int64_t n) const;
  at::Tensor Attend(const at::Tensor& q, const KVCache& kv, const at::Tensor& mask) const;
  at::Tensor ProjectQuery(const at::Tensor& x) const;
  // The projected queries, keys and values [..., q_dim + 2 kv_dim] of `x`.
  at::Tensor ProjectAll(const at::Tensor& x) const;

  int64_t heads_ = 1, kv_heads_ = 1, head_dim_ = 0;
  int64_t q_dim_ = 0, kv_dim_ = 0;  // heads * head_dim, kv_heads * head_dim
  // q, k and v projections in one [q_dim + 2 kv_dim, stream_dim] matrix (one matrix product
  // instead of three), with the query rows and bias already scaled by 1/sqrt(head_dim).
  // Biases are undefined in a model without them.
  at::Tensor wqkv_, bqkv_;
  at::Tensor wo_, bo_;
};

}  // namespace normserve
