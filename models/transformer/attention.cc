#include "models/transformer/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/io/weight_store.h"
#include "models/transformer/step_attention.h"

namespace normserve {

void KVCache::Reorder(const at::Tensor& index) {
  if (keys.defined()) {
    keys = keys.index_select(0, index);
    values = values.index_select(0, index);
  }
}

MultiheadAttention::MultiheadAttention(int64_t stream_dim, int64_t dim, int64_t heads,
                                       WeightStore& store, const std::string& prefix)
    : heads_(heads), dim_(dim) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim / heads));
  const auto take = [&](const char* name, std::vector<int64_t> shape) {
    return store.Take(prefix + "." + name, std::move(shape));
  };
  wqkv_ =
      at::cat({take("q_proj.weight", {dim, stream_dim}) * scale,
               take("k_proj.weight", {dim, stream_dim}), take("v_proj.weight", {dim, stream_dim})});
  bqkv_ = at::cat(
      {take("q_proj.bias", {dim}) * scale, take("k_proj.bias", {dim}), take("v_proj.bias", {dim})});
  wo_ = take("out_proj.weight", {stream_dim, dim});
  bo_ = take("out_proj.bias", {stream_dim});
}

at::Tensor MultiheadAttention::SplitHeads(const at::Tensor& x) const {
  return x.view({x.size(0), x.size(1), heads_, x.size(2) / heads_}).transpose(1, 2);
}

at::Tensor MultiheadAttention::ProjectQuery(const at::Tensor& x) const {
  return at::linear(x, wqkv_.narrow(0, 0, dim_), bqkv_.narrow(0, 0, dim_));
}

at::Tensor MultiheadAttention::Attend(const at::Tensor& q, const KVCache& kv,
                                      const at::Tensor& mask) const {
  at::Tensor scores = at::matmul(SplitHeads(q), kv.keys.transpose(2, 3));
  if (mask.defined()) scores = scores + mask;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  const at::Tensor context = at::matmul(probs, kv.values).transpose(1, 2).reshape(q.sizes());
  return at::linear(context, wo_, bo_);
}

at::Tensor MultiheadAttention::SelfAttention(const at::Tensor& query, const at::Tensor& mask,
                                             KVCache* cache) const {
  const auto qkv = at::linear(query, wqkv_, bqkv_).chunk(3, -1);
  KVCache step{SplitHeads(qkv[1]), SplitHeads(qkv[2])};
  if (cache) {
    if (cache->keys.defined()) {
      cache->keys = at::cat({cache->keys, step.keys}, 2);
      cache->values = at::cat({cache->values, step.values}, 2);
    } else {
      *cache = step;
    }
    return Attend(qkv[0], *cache, mask);
  }
  return Attend(qkv[0], step, mask);
}

std::pair<at::Tensor, at::Tensor> MultiheadAttention::MemoryKeysValues(
    const at::Tensor& memory) const {
  const auto kv =
      at::linear(memory, wqkv_.narrow(0, dim_, 2 * dim_), bqkv_.narrow(0, dim_, 2 * dim_))
          .chunk(2, -1);
  return {SplitHeads(kv[0]), SplitHeads(kv[1])};
}

at::Tensor MultiheadAttention::CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                                              const at::Tensor& mask, KVCache& cache) const {
  if (!cache.keys.defined()) std::tie(cache.keys, cache.values) = MemoryKeysValues(memory);
  return Attend(ProjectQuery(query), cache, mask);
}

at::Tensor MultiheadAttention::StepSelfAttention(const at::Tensor& query, at::Tensor& keys,
                                                 at::Tensor& values, const StepRows& rows) const {
  const at::Tensor context =
      normserve::StepSelfAttention(at::linear(query, wqkv_, bqkv_), keys, values, rows, heads_);
  return at::linear(context, wo_, bo_);
}

at::Tensor MultiheadAttention::StepCrossAttention(const at::Tensor& query, const at::Tensor& keys,
                                                  const at::Tensor& values,
                                                  const StepRows& rows) const {
  const at::Tensor context =
      normserve::StepCrossAttention(ProjectQuery(query), keys, values, rows, heads_);
  return at::linear(context, wo_, bo_);
}

void MultiheadAttention::To(const at::Device& device) {
  for (at::Tensor* t : {&wqkv_, &bqkv_, &wo_, &bo_}) {
    if (t->defined()) *t = t->to(device);  // an LM has no cross-attention weights
  }
}

}  // namespace normserve
