#include "models/transformer/embedding.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

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
  if (padding_idx >= 0) table[padding_idx].zero_();
  return table;
}

at::Tensor MarianSinusoidalTable(int64_t num_positions, int64_t dim) {
  const int64_t sines = (dim + 1) / 2;
  std::vector<float> values(static_cast<size_t>(num_positions * dim));
  for (int64_t p = 0; p < num_positions; ++p) {
    for (int64_t j = 0; j < dim; ++j) {
      const double angle =
          static_cast<double>(p) / std::pow(10000.0, 2.0 * static_cast<double>(j / 2) / dim);
      const int64_t column = j % 2 == 0 ? j / 2 : sines + j / 2;
      values[p * dim + column] = static_cast<float>(j % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  }
  return at::tensor(values, at::kFloat).view({num_positions, dim});
}

TokenEmbedding::TokenEmbedding(at::Tensor table, const ModelConfig& c)
    : table_(std::move(table)),
      scale_(c.scale_embedding ? std::sqrt(static_cast<double>(c.embed_dim)) : 1.0) {
  switch (c.positions) {
    case PositionEncoding::kSinusoidal:
    case PositionEncoding::kSinusoidalZeroMean: {
      const int64_t pad = c.special.pad;
      first_position_ = pad + 1;
      positions_ = SinusoidalTable(c.max_positions + first_position_, c.embed_dim, pad,
                                   c.zero_mean_positions());
      break;
    }
    case PositionEncoding::kMarianSinusoidal:
      positions_ = MarianSinusoidalTable(c.max_positions, c.embed_dim);
      break;
    case PositionEncoding::kRotary:
      return;
  }
  positions_ = positions_.narrow(1, 0, table_.size(1)).contiguous();
}

at::Tensor TokenEmbedding::Embed(const at::Tensor& tokens) const {
  const at::Tensor embedded = at::embedding(table_, tokens);
  return scale_ == 1.0 ? embedded : embedded * scale_;
}

at::Tensor TokenEmbedding::operator()(const at::Tensor& tokens, int64_t offset) const {
  if (!positions_.defined()) return Embed(tokens);
  const at::Tensor pos = positions_.narrow(0, first_position_ + offset, tokens.size(1));
  return Embed(tokens) + pos.unsqueeze(0);
}

at::Tensor TokenEmbedding::AtPositions(const at::Tensor& tokens,
                                       const at::Tensor& positions) const {
  if (!positions_.defined()) return Embed(tokens);
  return Embed(tokens) + positions_.index_select(0, positions + first_position_);
}

void TokenEmbedding::To(const at::Device& device) {
  if (!table_.defined()) return;  // an LM has no source embedding
  table_ = table_.to(device);
  if (positions_.defined()) positions_ = positions_.to(device);
}

}  // namespace normserve
