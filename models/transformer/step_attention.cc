#include "models/transformer/step_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

namespace normserve {
namespace {

at::Tensor HostIndex(const std::vector<int64_t>& values, const at::Device& device) {
  return at::tensor(values, at::kLong).to(device);
}

int64_t Longest(const std::vector<int64_t>& lengths) {
  return lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
}

// Attends q [R, KVH, G, Dh] (G query heads per key/value head) over the first lengths[r] of
// keys/values [R, KVH, n, Dh]; returns [R, KVH * G * Dh].
at::Tensor MaskedAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           const at::Tensor& lengths) {
  const int64_t n = keys.size(2);
  at::Tensor scores = at::matmul(q, keys.transpose(2, 3));
  const at::Tensor beyond = at::arange(n, lengths.options()).unsqueeze(0) >= lengths.unsqueeze(1);
  scores.masked_fill_(beyond.view({q.size(0), 1, 1, n}), -std::numeric_limits<float>::infinity());
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, values).reshape({q.size(0), -1});
}

bool OnCpuKernel(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
}

}  // namespace

at::Tensor StepSelfAttentionReference(const at::Tensor& qkv, at::Tensor& keys, at::Tensor& values,
                                      const StepRows& rows, int64_t heads, int64_t kv_heads) {
  const int64_t r = rows.size(), head_dim = keys.size(3);
  const int64_t q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
  const at::Tensor slot = HostIndex(rows.slot, keys.device());
  const at::Tensor position = HostIndex(rows.position, keys.device());
  using at::indexing::Slice;
  keys.index_put_({slot, Slice(), position},
                  qkv.narrow(1, q_dim, kv_dim).view({r, kv_heads, head_dim}));
  values.index_put_({slot, Slice(), position},
                    qkv.narrow(1, q_dim + kv_dim, kv_dim).view({r, kv_heads, head_dim}));
  const int64_t n = Longest(rows.position) + 1;
  return MaskedAttention(qkv.narrow(1, 0, q_dim).reshape({r, kv_heads, heads / kv_heads, head_dim}),
                         keys.index_select(0, slot).narrow(2, 0, n),
                         values.index_select(0, slot).narrow(2, 0, n), position + 1);
}

at::Tensor StepCrossAttentionReference(const at::Tensor& query, const at::Tensor& keys,
                                       const at::Tensor& values, const StepRows& rows,
                                       int64_t heads) {
  const int64_t r = rows.size(), head_dim = query.size(1) / heads;
  const at::Tensor source = HostIndex(rows.source, keys.device());
  const int64_t n = Longest(rows.source_length);
  return MaskedAttention(
      query.reshape({r, heads, 1, head_dim}), keys.index_select(0, source).narrow(2, 0, n),
      values.index_select(0, source).narrow(2, 0, n), HostIndex(rows.source_length, keys.device()));
}

at::Tensor StepSelfAttention(const at::Tensor& qkv, at::Tensor& keys, at::Tensor& values,
                             const StepRows& rows, int64_t heads, int64_t kv_heads) {
  if (!OnCpuKernel(qkv) || !OnCpuKernel(keys) || !OnCpuKernel(values)) {
    return StepSelfAttentionReference(qkv, keys, values, rows, heads, kv_heads);
  }
  const int64_t head_dim = keys.size(3);
  at::Tensor out = at::empty({rows.size(), heads * head_dim}, qkv.options());
  cpu::StepSelfAttention(qkv.data_ptr<float>(), rows.size(), heads, kv_heads, head_dim,
                         keys.data_ptr<float>(), values.data_ptr<float>(), keys.size(2),
                         rows.slot.data(), rows.position.data(), out.data_ptr<float>());
  return out;
}

at::Tensor StepCrossAttention(const at::Tensor& query, const at::Tensor& keys,
                              const at::Tensor& values, const StepRows& rows, int64_t heads) {
  if (!OnCpuKernel(query) || !OnCpuKernel(keys) || !OnCpuKernel(values)) {
    return StepCrossAttentionReference(query, keys, values, rows, heads);
  }
  const int64_t dim = query.size(1);
  at::Tensor out = at::empty({rows.size(), dim}, query.options());
  cpu::StepCrossAttention(query.data_ptr<float>(), rows.size(), heads, dim / heads,
                          keys.data_ptr<float>(), values.data_ptr<float>(), keys.size(2),
                          rows.source.data(), rows.source_length.data(), out.data_ptr<float>());
  return out;
}

}  // namespace normserve
