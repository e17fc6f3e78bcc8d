// Token embeddings, scaled by sqrt(d) unless the model says otherwise, plus the positions of
// the model's table: fairseq's sinusoids (half sines then half cosines, counted from
// padding_idx + 1) or Marian's (its own frequencies, counted from 0). Rotary models add no
// positions here; theirs rotate queries and keys (rotary.h). A Pre-CRMSNorm model's tables
// hold the first d - 1 channels (ModelConfig::residual_dim), and so do its positions.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "models/io/model_config.h"

namespace normserve {

// The [num_positions, dim] table of fairseq's SinusoidalPositionalEmbedding (row padding_idx
// is zero; none when it is negative); with zero_mean, every row minus its mean over the
// channels.
at::Tensor SinusoidalTable(int64_t num_positions, int64_t dim, int64_t padding_idx, bool zero_mean);

// The [num_positions, dim] table of Marian: the angle of channel j at position p is
// p / 10000^(2 floor(j/2) / dim); the sines of the even channels fill the first ceil(dim/2)
// columns, the cosines of the odd ones the rest; computed in double as Hugging Face does.
at::Tensor MarianSinusoidalTable(int64_t num_positions, int64_t dim);

class TokenEmbedding {
 public:
  TokenEmbedding() = default;
  // `table` is [vocab, embed_dim - 1 or embed_dim]: positions are those of embed_dim
  // channels, cut to the table's, for sequences of up to max_positions tokens.
  TokenEmbedding(at::Tensor table, const ModelConfig& config);

  // tokens [B, T] whose first token sits at position `offset` of its sequence.
  at::Tensor operator()(const at::Tensor& tokens, int64_t offset) const;
  // tokens [R], each at its own 0-based position (positions [R]): [R, dim].
  at::Tensor AtPositions(const at::Tensor& tokens, const at::Tensor& positions) const;
  const at::Tensor& table() const { return table_; }
  void To(const at::Device& device);

 private:
  at::Tensor Embed(const at::Tensor& tokens) const;

  at::Tensor table_;
  at::Tensor positions_;        // undefined for rotary models
  int64_t first_position_ = 0;  // the table row of position 0
  double scale_ = 1.0;
};

}  // namespace normserve
