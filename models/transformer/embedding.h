// Token embeddings scaled by sqrt(d) plus fairseq's sinusoidal positions: half sines then
// half cosines, positions counted from padding_idx + 1. A Pre-CRMSNorm model's tables hold
// the first d - 1 channels (ModelConfig::residual_dim), and so do its positions.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace normserve {

class WeightStore;

// The [num_positions, dim] table of fairseq's SinusoidalPositionalEmbedding (row padding_idx
// is zero); with zero_mean, every row minus its mean over the channels.
at::Tensor SinusoidalTable(int64_t num_positions, int64_t dim, int64_t padding_idx, bool zero_mean);

class TokenEmbedding {
 public:
  TokenEmbedding() = default;
  // `table` is [vocab, dim - 1 or dim]: the scale is sqrt(dim) and the positions are those
  // of dim channels, cut to the table's. Positions cover sequences of up to max_positions
  // tokens.
  TokenEmbedding(at::Tensor table, int64_t dim, int64_t max_positions, int64_t padding_idx,
                 bool zero_mean_positions);

  // tokens [B, T] whose first token sits at position `offset` of its sequence.
  at::Tensor operator()(const at::Tensor& tokens, int64_t offset) const;
  // tokens [R], each at its own 0-based position (positions [R]): [R, dim].
  at::Tensor AtPositions(const at::Tensor& tokens, const at::Tensor& positions) const;
  const at::Tensor& table() const { return table_; }
  void To(const at::Device& device);

 private:
  at::Tensor table_;
  at::Tensor positions_;
  int64_t padding_idx_ = 1;
  double scale_ = 1.0;
};

}  // namespace normserve
