// Rotary position embeddings (Su et al. 2021) as Llama applies them: within each head, channel
// i of the first half and channel i of the second half form a pair that turns by the angle
// position * theta^(-2i / head_dim). Queries and keys turn; values and the residual stream
// carry no position.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace normserve {

// The cosines and sines of the positions of one forward, looked up once and applied to the
// queries and keys of every layer.
struct RotaryAngles {
  at::Tensor cos, sin;  // broadcast over heads: [..., 1, head_dim / 2]
  int64_t head_dim = 0;
  // x [..., heads * head_dim] with the leading shape of the positions.
  at::Tensor Rotate(const at::Tensor& x) const;
};

class RotaryEmbedding {
 public:
  RotaryEmbedding() = default;
  RotaryEmbedding(int64_t head_dim, double theta, int64_t max_positions);

  // For x [B, T, heads * head_dim] whose first step sits at position `offset`.
  RotaryAngles FromPosition(int64_t offset, int64_t steps) const;
  // For x [R, heads * head_dim], row r at positions[r] ([R], on the table's device).
  RotaryAngles AtPositions(const at::Tensor& positions) const;

  bool enabled() const { return cos_.defined(); }
  void To(const at::Device& device);

 private:
  int64_t head_dim_ = 0;
  at::Tensor cos_, sin_;  // [max_positions, head_dim / 2], fp32
};

}  // namespace normserve
