// The caches of the step engine (decoding/step_engine.h), in slots that outlive any one
// step: per decoder layer, self-attention keys and values [slots, H, T, Dh] with one slot per
// row (a beam, or a generated sequence), and cross-attention keys and values [sources, H, S,
// Dh] with one slot per source sentence, shared by its beams. Rows write their new key and
// value in place (step_attention.h); a beam that forks copies its parent's slot; nothing is
// concatenated or reordered as a whole.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace normserve {

class DecoderSlots {
 public:
  // `heads` are key/value heads (fewer than the query heads in grouped-query attention);
  // `max_steps` bounds T (the model's max_positions).
  DecoderSlots(int64_t layers, int64_t heads, int64_t head_dim, bool cross_attention,
               int64_t max_steps, at::TensorOptions options);

  int64_t AcquireRow();
  void ReleaseRow(int64_t slot);
  // A source slot with room for `length` keys.
  int64_t AcquireSource(int64_t length);
  void ReleaseSource(int64_t source);
  // Room for `steps` positions in every row slot.
  void ReserveSteps(int64_t steps);
  // For each (from, to, steps): the first `steps` keys and values of row slot `from` become
  // those of `to`, in every layer.
  struct Copy {
    int64_t from, to, steps;
  };
  void CopyRows(const std::vector<Copy>& copies);

  int64_t live_rows() const { return row_capacity_ - static_cast<int64_t>(free_rows_.size()); }

  std::vector<at::Tensor> self_keys, self_values;    // per layer [rows, H, T, Dh]
  std::vector<at::Tensor> cross_keys, cross_values;  // per layer [sources, H, S, Dh]

 private:
  // Grows dimension `dim` of every tensor in `buffers` to `size`, keeping the contents.
  static void Grow(std::vector<at::Tensor>& buffers, int64_t dim, int64_t size);
  // A free slot of the pool whose buffers are keys and values, doubling them when full.
  static int64_t Take(std::vector<at::Tensor>& keys, std::vector<at::Tensor>& values,
                      int64_t& capacity, std::vector<int64_t>& free);

  const int64_t heads_, head_dim_, max_steps_;
  const bool cross_;
  const at::TensorOptions options_;
  int64_t row_capacity_ = 0, step_capacity_ = 0;
  int64_t source_capacity_ = 0, source_length_capacity_ = 0;
  std::vector<int64_t> free_rows_, free_sources_;
};

}  // namespace normserve
