#include <ATen/ATen.h>

#include <limits>

#include "models/decoding/search.h"
#include "models/decoding/token_mask.h"

namespace normserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

std::vector<Hypothesis> GreedySearch(const Transformer& model, const EncoderOutput& memory,
                                     const std::vector<int64_t>& max_lengths, double length_penalty,
                                     const StopSentence& stop) {
  const SpecialTokens& special = model.config().special;
  const auto batch = static_cast<int64_t>(max_lengths.size());
  DecoderState state = model.StartDecoding(memory, batch);
  std::vector<Hypothesis> out(batch);
  std::vector<bool> finished(batch, false);
  const auto on_device = at::TensorOptions().dtype(at::kLong).device(model.device());
  at::Tensor next = at::full({batch, 1}, special.eos, on_device);
  int64_t remaining = batch;
  for (int64_t step = 0; remaining > 0; ++step) {
    for (int64_t b = 0; stop && b < batch; ++b) {
      if (!finished[b] && stop(b)) {
        finished[b] = true;
        --remaining;
        out[b].score = NormalizedScore(out[b].logprob, out[b].tokens.size() + 1, length_penalty);
      }
    }
    if (remaining == 0) break;
    at::Tensor logprobs = at::log_softmax(model.Decode(next, state).select(1, 0), -1);
    MaskNonOutputTokens(logprobs, special);
    ForceEosAtLimit(logprobs, step, max_lengths, special.eos);
    const auto [best_on_device, index_on_device] = logprobs.max(-1);
    const at::Tensor best = best_on_device.cpu(), index = index_on_device.cpu();
    const auto best_a = best.accessor<float, 1>();
    const auto index_a = index.accessor<int64_t, 1>();
    for (int64_t b = 0; b < batch; ++b) {
      if (finished[b]) continue;
      out[b].logprob += best_a[b];
      // No possible token (non-finite scores) ends the sentence like </s>, with score -inf.
      if (index_a[b] == special.eos || best_a[b] == kNegInf) {
        finished[b] = true;
        --remaining;
        out[b].score = NormalizedScore(out[b].logprob, out[b].tokens.size() + 1, length_penalty);
      } else {
        out[b].tokens.push_back(index_a[b]);
      }
    }
    next = index_on_device.masked_fill(index_on_device.eq(special.eos), special.pad).unsqueeze(1);
  }
  return out;
}

}  // namespace normserve
