#include "models/transformer/rotary.h"

#include <ATen/ATen.h>

#include <vector>

namespace normserve {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double theta, int64_t max_positions)
    : head_dim_(head_dim) {
  // In fp32 and in this order, as Hugging Face's Llama computes them, so that the angles and
  // their cosines match the reference bit for bit on the same ATen.
  const at::Tensor exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / head_dim;
  const at::Tensor inverse_frequencies = at::reciprocal(at::pow(theta, exponents));
  const at::Tensor angles = at::arange(max_positions, at::kLong).to(at::kFloat).unsqueeze(1) *
                            inverse_frequencies.unsqueeze(0);
  cos_ = angles.cos();
  sin_ = angles.sin();
}

at::Tensor RotaryAngles::Rotate(const at::Tensor& x) const {
  std::vector<int64_t> heads_shape(x.sizes().begin(), x.sizes().end() - 1);
  heads_shape.push_back(x.size(-1) / head_dim);
  heads_shape.push_back(head_dim);
  const at::Tensor h = x.view(heads_shape);
  const int64_t half = head_dim / 2;
  const at::Tensor first = h.narrow(-1, 0, half), second = h.narrow(-1, half, half);
  const at::Tensor c = cos.to(x.scalar_type()), s = sin.to(x.scalar_type());
  return at::cat({first * c - second * s, second * c + first * s}, -1).view(x.sizes());
}

RotaryAngles RotaryEmbedding::FromPosition(int64_t offset, int64_t steps) const {
  return {cos_.narrow(0, offset, steps).unsqueeze(0).unsqueeze(-2),
          sin_.narrow(0, offset, steps).unsqueeze(0).unsqueeze(-2), head_dim_};
}

RotaryAngles RotaryEmbedding::AtPositions(const at::Tensor& positions) const {
  return {cos_.index_select(0, positions).unsqueeze(-2),
          sin_.index_select(0, positions).unsqueeze(-2), head_dim_};
}

void RotaryEmbedding::To(const at::Device& device) {
  if (!enabled()) return;
  cos_ = cos_.to(device);
  sin_ = sin_.to(device);
}

}  // namespace normserve
