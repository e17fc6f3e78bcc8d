#include "models/transformer/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/io/weight_store.h"

namespace normserve {

void KVCache::Reorder(const at::Tensor& index) {
  if (keys.defined()) {
    keys = keys.index_select(0, index);
    values = values.index_select(0, index);
  }
}

MultiheadAttention::MultiheadAttention(int64_t dim, int64_t heads, WeightStore& store,
                                       const std::string& prefix)
    : heads_(heads) {
  wq_ = store.Take(prefix + ".q_proj.weight", {dim, dim});
  bq_ = store.Take(prefix + ".q_proj.bias", {dim});
  wk_ = store.Take(prefix + ".k_proj.weight", {dim, dim});
  bk_ = store.Take(prefix + ".k_proj.bias", {dim});
  wv_ = store.Take(prefix + ".v_proj.weight", {dim, dim});
  bv_ = store.Take(prefix + ".v_proj.bias", {dim});
  wo_ = store.Take(prefix + ".out_proj.weight", {dim, dim});
  bo_ = store.Take(prefix + ".out_proj.bias", {dim});
}

at::Tensor MultiheadAttention::SplitHeads(const at::Tensor& x) const {
  return x.view({x.size(0), x.size(1), heads_, x.size(2) / heads_}).transpose(1, 2);
}

at::Tensor MultiheadAttention::Attend(const at::Tensor& query, const KVCache& kv,
                                      const at::Tensor& mask) const {
  const int64_t head_dim = query.size(2) / heads_;
  const at::Tensor q = SplitHeads(at::linear(query, wq_, bq_) * (1.0 / std::sqrt(head_dim)));
  at::Tensor scores = at::matmul(q, kv.keys.transpose(2, 3));
  if (mask.defined()) scores = scores + mask;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(query.scalar_type());
  const at::Tensor context = at::matmul(probs, kv.values).transpose(1, 2).reshape(query.sizes());
  return at::linear(context, wo_, bo_);
}

at::Tensor MultiheadAttention::SelfAttention(const at::Tensor& query, const at::Tensor& mask,
                                             KVCache* cache) const {
  KVCache step{SplitHeads(at::linear(query, wk_, bk_)), SplitHeads(at::linear(query, wv_, bv_))};
  if (cache) {
    if (cache->keys.defined()) {
      cache->keys = at::cat({cache->keys, step.keys}, 2);
      cache->values = at::cat({cache->values, step.values}, 2);
    } else {
      *cache = step;
    }
    return Attend(query, *cache, mask);
  }
  return Attend(query, step, mask);
}

at::Tensor MultiheadAttention::CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                                              const at::Tensor& mask, KVCache& cache) const {
  if (!cache.keys.defined()) {
    cache.keys = SplitHeads(at::linear(memory, wk_, bk_));
    cache.values = SplitHeads(at::linear(memory, wv_, bv_));
  }
  return Attend(query, cache, mask);
}

void MultiheadAttention::To(const at::Device& device) {
  for (at::Tensor* t : {&wq_, &bq_, &wk_, &bk_, &wv_, &bv_, &wo_, &bo_}) {
    if (t->defined()) *t = t->to(device);  // an LM has no cross-attention weights
  }
}

}  // namespace normserve
