// Multi-head attention with fairseq's parameter names (q_proj, k_proj, v_proj, out_proj)
// and a key/value cache for incremental decoding.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace normserve {

class WeightStore;

// Keys and values seen so far, [batch, heads, steps, head_dim] each.
struct KVCache {
  at::Tensor keys;
  at::Tensor values;
  void Reorder(const at::Tensor& index);
};

class MultiheadAttention {
 public:
  MultiheadAttention() = default;
  MultiheadAttention(int64_t dim, int64_t heads, WeightStore& store, const std::string& prefix);

  // Self-attention over query [B, T, D]: appends its keys and values to `cache` (when given)
  // and attends to everything cached. `mask` is additive, broadcastable to [B, H, T, keys].
  at::Tensor SelfAttention(const at::Tensor& query, const at::Tensor& mask, KVCache* cache) const;
  // Attention to a fixed memory [B, S, D] whose keys and values are computed once and kept
  // in `cache`.
  at::Tensor CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                            const at::Tensor& mask, KVCache& cache) const;

  void To(const at::Device& device);

 private:
  at::Tensor SplitHeads(const at::Tensor& x) const;  // [B, T, D] -> [B, H, T, Dh]
  at::Tensor Attend(const at::Tensor& query, const KVCache& kv, const at::Tensor& mask) const;

  int64_t heads_ = 1;
  at::Tensor wq_, bq_, wk_, bk_, wv_, bv_, wo_, bo_;
};

}  // namespace normserve
