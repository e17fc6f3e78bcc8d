#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "models/decoding/search.h"
#include "models/decoding/token_mask.h"

namespace normserve {

// Every sentence keeps K rows; rows past its live beams are dead (score -inf), so that the
// batch keeps one shape from the first step to the last.
std::vector<std::vector<Hypothesis>> BeamSearch(const Transformer& model,
                                                const EncoderOutput& memory,
                                                const std::vector<int64_t>& max_lengths,
                                                const BeamOptions& options,
                                                const StopSentence& stop) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const SpecialTokens& special = model.config().special;
  const auto batch = static_cast<int64_t>(max_lengths.size());
  const int64_t k = options.beam_size;
  const int64_t rows = batch * k;
  DecoderState state =
      model.StartDecoding(memory.states.defined() ? memory.Expand(k) : memory, rows);
  std::vector<SentenceBeams> sentences;
  for (int64_t b = 0; b < batch; ++b) {
    sentences.emplace_back(k, max_lengths[b], options.length_penalty);
  }
  const at::Device device = model.device();
  at::Tensor next = at::full({rows, 1}, special.decoder_start,
                             at::TensorOptions().dtype(at::kLong).device(device));
  int64_t remaining = batch;
  while (remaining > 0) {
    for (int64_t b = 0; stop && b < batch; ++b) {
      if (!sentences[b].done() && stop(b)) {
        sentences[b].Stop();
        --remaining;
      }
    }
    if (remaining == 0) break;
    at::Tensor beam_scores = at::full({rows}, kNegInf);
    for (int64_t b = 0; b < batch; ++b) {
      const std::vector<float>& live = sentences[b].scores();
      for (size_t j = 0; j < live.size(); ++j) beam_scores[b * k + j] = live[j];
    }
    at::Tensor logprobs = at::log_softmax(model.Decode(next, state).select(1, 0), -1);
    MaskNonOutputTokens(logprobs, special);
    const int64_t vocab = logprobs.size(1);
    const at::Tensor candidates =
        (beam_scores.to(device).unsqueeze(1) + logprobs).view({batch, k * vocab});
    const auto [top_on_device, index_on_device] = candidates.topk(std::min(2 * k, k * vocab), 1);
    const at::Tensor top_scores = top_on_device.cpu().contiguous();
    const at::Tensor top_index = index_on_device.cpu().contiguous();
    std::vector<int64_t> reorder(rows), tokens(rows, special.padding());
    for (int64_t b = 0; b < batch; ++b) {
      SentenceBeams& s = sentences[b];
      std::vector<int64_t> parents;
      if (!s.done()) {
        const int64_t width = top_scores.size(1);
        parents = s.Advance(top_scores.data_ptr<float>() + b * width,
                            top_index.data_ptr<int64_t>() + b * width, width, vocab, special.eos);
        if (s.done()) --remaining;
      }
      for (int64_t j = 0; j < k; ++j) {
        const bool live = j < static_cast<int64_t>(parents.size());
        reorder[b * k + j] = b * k + (live ? parents[j] : 0);
        if (live) tokens[b * k + j] = s.last_token(j);
      }
    }
    state.Reorder(at::tensor(reorder, at::kLong).to(device));
    next = at::tensor(tokens, at::kLong).view({rows, 1}).to(device);
  }
  std::vector<std::vector<Hypothesis>> out;
  for (SentenceBeams& s : sentences) out.push_back(s.Best(options.n_best));
  return out;
}

}  // namespace normserve
