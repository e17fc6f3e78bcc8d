// Rotary position embeddings (Su et al. 2021) as Llama applies them: within each head, channel
// i of the first half and channel i of the second half form a pair that turns by the angle
// position * theta^(-2i / head_dim). Queries and keys turn; values and the residual stream
// carry no position.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace normserve {

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(int64_t head_dim, double theta, int64_t max_positions);

  // x [B, T, heads * head_dim] whose first step sits at position `offset`.
  at::Tensor FromPosition(const at::Tensor& x, int64_t offset) const;
  // x [R, heads * head_dim], row r at positions[r] ([R], on x's device).
  at::Tensor AtPositions(const at::Tensor& x, const at::Tensor& positions) const;

  bool enabled() const { return cos_.defined(); }
  void To(const at::Device& device);

 private:
  // x [..., heads * head_dim] turned by cos/sin [..., head_dim / 2] (broadcast over heads).
  at::Tensor Rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

  int64_t head_dim_ = 0;
  at::Tensor cos_, sin_;  // [max_positions, head_dim / 2], fp32
};

}  // namespace normserve
