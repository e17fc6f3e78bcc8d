#include "models/transformer/embedding.h"

#include <ATen/ATen.h>

#include <cmath>

namespace normserve {

at::Tensor SinusoidalTable(int64_t num_positions, int64_t dim, int64_t padding_idx,
                           bool zero_mean) {
  const int64_t half = dim / 2;
  const double step = std::log(10000.0) / static_cast<double>(std::max<int64_t>(half - 1, 1));
  const at::Tensor freqs = at::exp(at::arange(half, at::kFloat) * -step);
  const at::Tensor angles = at::arange(num_positions, at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  at::Tensor table = at::cat({at::sin(angles), at::cos(angles)}, 1);
  if (dim % 2 == 1) table = at::cat({table, at::zeros({num_positions, 1})}, 1);
  if (zero_mean) table -= table.mean(1, /*keepdim=*/true);
  table[padding_idx].zero_();
  return table;
}

TokenEmbedding::TokenEmbedding(at::Tensor table, int64_t dim, int64_t max_positions,
                               int64_t padding_idx, bool zero_mean_positions)
    : table_(std::move(table)),
      padding_idx_(padding_idx),
      scale_(std::sqrt(static_cast<double>(dim))) {
  positions_ =
      SinusoidalTable(max_positions + padding_idx + 1, dim, padding_idx, zero_mean_positions)
          .narrow(1, 0, table_.size(1))
          .contiguous();
}

at::Tensor TokenEmbedding::operator()(const at::Tensor& tokens, int64_t offset) const {
  const int64_t first = padding_idx_ + 1 + offset;
  const at::Tensor pos = positions_.narrow(0, first, tokens.size(1));
  return at::embedding(table_, tokens) * scale_ + pos.unsqueeze(0);
}

at::Tensor TokenEmbedding::AtPositions(const at::Tensor& tokens,
                                       const at::Tensor& positions) const {
  return at::embedding(table_, tokens) * scale_ +
         positions_.index_select(0, positions + (padding_idx_ + 1));
}

void TokenEmbedding::To(const at::Device& device) {
  if (!table_.defined()) return;  // an LM has no source embedding
  table_ = table_.to(device);
  positions_ = positions_.to(device);
}

}  // namespace normserve
