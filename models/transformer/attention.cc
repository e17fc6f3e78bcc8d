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

MultiheadAttention::MultiheadAttention(const Shape& shape, WeightStore& store,
                                       const std::string& prefix)
    : heads_(shape.heads),
      kv_heads_(shape.kv_heads),
      head_dim_(shape.head_dim),
      q_dim_(shape.heads * shape.head_dim),
      kv_dim_(shape.kv_heads * shape.head_dim) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const int64_t d = shape.stream_dim;
  const auto take = [&](const char* name, std::vector<int64_t> shape) {
    return store.Take(prefix + "." + name, std::move(shape));
  };
  wqkv_ = at::cat({take("q_proj.weight", {q_dim_, d}) * scale, take("k_proj.weight", {kv_dim_, d}),
                   take("v_proj.weight", {kv_dim_, d})});
  wo_ = take("out_proj.weight", {d, q_dim_});
  if (shape.bias) {
    bqkv_ = at::cat({take("q_proj.bias", {q_dim_}) * scale, take("k_proj.bias", {kv_dim_}),
                     take("v_proj.bias", {kv_dim_})});
    bo_ = take("out_proj.bias", {d});
  }
}

at::Tensor MultiheadAttention::SplitHeads(const at::Tensor& x, int64_t n) const {
  return x.view({x.size(0), x.size(1), n, head_dim_}).transpose(1, 2);
}

at::Tensor MultiheadAttention::ProjectQuery(const at::Tensor& x) const {
  return at::linear(x, wqkv_.narrow(0, 0, q_dim_),
                    bqkv_.defined() ? bqkv_.narrow(0, 0, q_dim_) : at::Tensor());
}

at::Tensor MultiheadAttention::ProjectAll(const at::Tensor& x) const {
  return at::linear(x, wqkv_, bqkv_);
}

at::Tensor MultiheadAttention::Attend(const at::Tensor& q, const KVCache& kv,
                                      const at::Tensor& mask) const {
  // Each key/value head serves heads / kv_heads query heads in a row (Hugging Face's
  // repeat_kv): repeated here, where whole sequences are attended at once.
  const int64_t group = heads_ / kv_heads_;
  const at::Tensor keys = group == 1 ? kv.keys : kv.keys.repeat_interleave(group, 1);
  const at::Tensor values = group == 1 ? kv.values : kv.values.repeat_interleave(group, 1);
  at::Tensor scores = at::matmul(SplitHeads(q, heads_), keys.transpose(2, 3));
  if (mask.defined()) scores = scores + mask;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  const at::Tensor context = at::matmul(probs, values).transpose(1, 2).reshape(q.sizes());
  return at::linear(context, wo_, bo_);
}

at::Tensor MultiheadAttention::SelfAttention(const at::Tensor& query, const at::Tensor& mask,
                                             KVCache* cache, const RotaryAngles* angles) const {
  const at::Tensor qkv = ProjectAll(query);
  at::Tensor q = qkv.narrow(-1, 0, q_dim_), k = qkv.narrow(-1, q_dim_, kv_dim_);
  if (angles) {
    q = angles->Rotate(q);
    k = angles->Rotate(k);
  }
  KVCache step{SplitHeads(k, kv_heads_),
               SplitHeads(qkv.narrow(-1, q_dim_ + kv_dim_, kv_dim_), kv_heads_)};
  if (cache) {
    if (cache->keys.defined()) {
      cache->keys = at::cat({cache->keys, step.keys}, 2);
      cache->values = at::cat({cache->values, step.values}, 2);
    } else {
      *cache = step;
    }
    return Attend(q, *cache, mask);
  }
  return Attend(q, step, mask);
}

std::pair<at::Tensor, at::Tensor> MultiheadAttention::MemoryKeysValues(
    const at::Tensor& memory) const {
  const auto kv = at::linear(memory, wqkv_.narrow(0, q_dim_, 2 * kv_dim_),
                             bqkv_.defined() ? bqkv_.narrow(0, q_dim_, 2 * kv_dim_) : at::Tensor())
                      .chunk(2, -1);
  return {SplitHeads(kv[0], kv_heads_), SplitHeads(kv[1], kv_heads_)};
}

at::Tensor MultiheadAttention::CrossAttention(const at::Tensor& query, const at::Tensor& memory,
                                              const at::Tensor& mask, KVCache& cache) const {
  if (!cache.keys.defined()) std::tie(cache.keys, cache.values) = MemoryKeysValues(memory);
  return Attend(ProjectQuery(query), cache, mask);
}

at::Tensor MultiheadAttention::StepSelfAttention(const at::Tensor& query, at::Tensor& keys,
                                                 at::Tensor& values, const StepRows& rows,
                                                 const RotaryAngles* angles) const {
  const at::Tensor qkv = ProjectAll(query);
  if (angles) {  // in place: the kernel reads the queries and keys from qkv
    for (const auto& [offset, size] : {std::pair{int64_t{0}, q_dim_}, std::pair{q_dim_, kv_dim_}}) {
      at::Tensor part = qkv.narrow(1, offset, size);
      part.copy_(angles->Rotate(part));
    }
  }
  const at::Tensor context =
      normserve::StepSelfAttention(qkv, keys, values, rows, heads_, kv_heads_);
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
