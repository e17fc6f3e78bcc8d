// transformer_mt (encoder-decoder) and transformer_lm (decoder only) on ATen tensors, with
// fairseq's weight names. Inference only; every method is const and thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "models/io/model_config.h"
#include "models/transformer/attention.h"

namespace normserve {

class WeightStore;
class DecoderSlots;
struct StepRows;

struct EncoderOutput {
  at::Tensor states;       // [B, S, D]
  at::Tensor memory_mask;  // additive [B, 1, 1, S]: -inf on source padding
  // Repeats every sentence `times` times in a row (beam search's layout).
  EncoderOutput Expand(int64_t times) const;
};

// Everything an incremental decoder keeps between steps.
struct DecoderState {
  std::vector<KVCache> self_attention;   // one per layer
  std::vector<KVCache> cross_attention;  // one per layer, transformer_mt only
  EncoderOutput memory;
  int64_t steps = 0;  // tokens decoded so far
  // Row i takes the decoding history of row index[i] (beam search's reordering). index must
  // keep every row within its sentence's group of beams.
  void Reorder(const at::Tensor& index);
};

class Transformer {
 public:
  // Takes every weight the config implies from `store` and checks that none is left over.
  Transformer(const ModelConfig& config, WeightStore& store);
  ~Transformer();
  Transformer(Transformer&&) noexcept;

  // tokens [B, S] right-padded with the pad id.
  EncoderOutput Encode(const at::Tensor& tokens) const;
  DecoderState StartDecoding(EncoderOutput memory, int64_t batch) const;
  // Feeds tokens [B, T] after the state's steps and returns their logits [B, T, V] in fp32.
  // T > 1 runs the steps at once under a causal mask (scoring); the cache grows either way.
  at::Tensor Decode(const at::Tensor& tokens, DecoderState& state) const;

  // The step engine's forms (decoding/step_engine.h), with caches in `slots`:
  // Encodes sources [B, S] (right-padded) and writes each one's cross-attention keys and
  // values into its source slot.
  void EncodeIntoSlots(const at::Tensor& tokens, const std::vector<int64_t>& sources,
                       DecoderSlots& slots) const;
  // Feeds prompts [B, T] (right-padded; lengths[b] real tokens each) from position 0, writes
  // their keys and values into row slots `rows`, and returns the logits [B, V] (fp32) of
  // each prompt's last token.
  at::Tensor PrefillIntoSlots(const at::Tensor& tokens, const std::vector<int64_t>& lengths,
                              const std::vector<int64_t>& rows, DecoderSlots& slots) const;
  // One token per row: tokens [R] at rows.position, each row attending to its own slots.
  // Returns the logits [R, V] in fp32. slots must have room for every row's position.
  at::Tensor Step(const at::Tensor& tokens, const StepRows& rows, DecoderSlots& slots) const;
  // The slots this model's decoder needs (empty), with room for up to max_positions steps.
  DecoderSlots MakeSlots() const;

  const ModelConfig& config() const { return config_; }
  void To(const at::Device& device);
  const at::Device& device() const { return device_; }
  int64_t parameter_count() const { return parameters_; }

 private:
  struct Layers;
  ModelConfig config_;
  std::unique_ptr<Layers> layers_;
  int64_t parameters_ = 0;
  at::Device device_ = at::kCPU;
};

}  // namespace normserve
