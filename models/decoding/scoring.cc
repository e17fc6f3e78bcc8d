#include <ATen/ATen.h>

#include "models/decoding/search.h"

namespace normserve {

at::Tensor PadBatch(const std::vector<std::vector<int64_t>>& sequences, int64_t pad,
                    const at::Device& device) {
  size_t longest = 0;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  at::Tensor out = at::full({static_cast<int64_t>(sequences.size()), static_cast<int64_t>(longest)},
                            pad, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < sequences.size(); ++i) {
    for (size_t j = 0; j < sequences[i].size(); ++j) a[i][j] = sequences[i][j];
  }
  return out.to(device);
}

std::vector<std::vector<double>> ScoreTargets(const Transformer& model, const EncoderOutput& memory,
                                              const std::vector<std::vector<int64_t>>& targets) {
  const SpecialTokens& special = model.config().special;
  // Decoder input is the start token (</s> in fairseq's models) + target; it predicts
  // target + </s>.
  std::vector<std::vector<int64_t>> inputs, outputs;
  for (const auto& t : targets) {
    inputs.push_back({special.decoder_start});
    inputs.back().insert(inputs.back().end(), t.begin(), t.end());
    outputs.push_back(t);
    outputs.back().push_back(special.eos);
  }
  const auto batch = static_cast<int64_t>(targets.size());
  DecoderState state = model.StartDecoding(memory, batch);
  const at::Device device = model.device();
  // log_softmax at the targets only: their logits minus each position's log-sum-exp, without
  // writing a [B, T, V] tensor of log-probabilities.
  const at::Tensor logits = model.Decode(PadBatch(inputs, special.padding(), device), state);
  const at::Tensor targets_index = PadBatch(outputs, special.padding(), device).unsqueeze(2);
  const at::Tensor picked = (logits.gather(2, targets_index).squeeze(2) - at::logsumexp(logits, -1))
                                .to(at::kDouble)
                                .cpu();
  const auto a = picked.accessor<double, 2>();
  std::vector<std::vector<double>> out(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    for (size_t j = 0; j < outputs[i].size(); ++j) out[i].push_back(a[i][j]);
  }
  return out;
}

}  // namespace normserve
