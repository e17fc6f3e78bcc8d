// Multi-head attention with fairseq's parameter names (q_proj, k_proj, v_proj, out_proj)
// and a key/value cache for incremental decoding.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

namespace normserve {

class WeightStore;
struct StepRows;

// Keys and values seen so far, [batch, heads, steps, head_dim] each.
struct KVCache {
  at::Tensor keys;
  at::Tensor values;
  void Reorder(const at::Tensor& index);
};

class MultiheadAttention {
 public:
  MultiheadAttention() = default;
  // Reads [stream_dim] inputs and writes [stream_dim] outputs; q, k and v have dim =
  // heads * head_dim channels (stream_dim is dim - 1 in a Pre-CRMSNorm model).
  MultiheadAttention(int64_t stream_dim, int64_t dim, int64_t heads, WeightStore& store,
                     const std::string& prefix);

  // Self-attention over query [B, T, D]: appends its keys and values to `cache` (when given)
  // and attends to everything cached. `mask` is additive, broadcastable to [B, H, T, keys].
  at::Tensor SelfAttention(const at::Tensor& query, const at::Tensor& mask, KVCache* cache) const;
  // Attention to a fixed memory [B, S, D] whose keys and values are computed once and kept
  // in `cache`.
  at::Tensor CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                            const at::Tensor& mask, KVCache& cache) const;

  // The step engine's forms (step_attention.h): one new position per row [R, D], with the
  // keys and values in cache slots.
  at::Tensor StepSelfAttention(const at::Tensor& query, at::Tensor& keys, at::Tensor& values,
                               const StepRows& rows) const;
  at::Tensor StepCrossAttention(const at::Tensor& query, const at::Tensor& keys,
                                const at::Tensor& values, const StepRows& rows) const;
  // The keys and values of a memory [B, S, D] as the cross-attention keeps them, each
  // [B, H, S, Dh].
  std::pair<at::Tensor, at::Tensor> MemoryKeysValues(const at::Tensor& memory) const;

  void To(const at::Device& device);

 private:
  at::Tensor SplitHeads(const at::Tensor& x) const;  // [B, T, D] -> [B, H, T, Dh]
  at::Tensor Attend(const at::Tensor& q, const KVCache& kv, const at::Tensor& mask) const;
  at::Tensor ProjectQuery(const at::Tensor& x) const;

  int64_t heads_ = 1;
  int64_t dim_ = 0;  // heads * head_dim
  // q, k and v projections in one [3D, stream_dim] matrix (one matrix product instead of three),
  // with the query rows and bias already scaled by 1/sqrt(head_dim).
  at::Tensor wqkv_, bqkv_;
  at::Tensor wo_, bo_;
};

}  // namespace normserve
