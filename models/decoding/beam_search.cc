#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "models/decoding/search.h"
#include "models/decoding/token_mask.h"

namespace normserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Sentence {
  std::vector<Hypothesis> finished;
  bool done = false;
};

}  // namespace

double NormalizedScore(double logprob, size_t output_tokens, double length_penalty) {
  return logprob / std::pow(static_cast<double>(output_tokens), length_penalty);
}

// Batched beam search in fairseq's manner: each step keeps the 2K best expansions of a
// sentence's K beams; a </s> among the best K finishes a hypothesis, and a sentence is done
// once it has K finished hypotheses (at the latest when its length limit forces </s>).
std::vector<std::vector<Hypothesis>> BeamSearch(const Transformer& model,
                                                const EncoderOutput& memory,
                                                const std::vector<int64_t>& max_lengths,
                                                const BeamOptions& options,
                                                const StopSentence& stop) {
  const SpecialTokens& special = model.config().special;
  const auto batch = static_cast<int64_t>(max_lengths.size());
  const int64_t k = options.beam_size;
  const int64_t rows = batch * k;
  DecoderState state =
      model.StartDecoding(memory.states.defined() ? memory.Expand(k) : memory, rows);

  // Only the first beam of each sentence is live at the start, so step 0 does not return K
  // copies of the same expansion.
  const at::Device device = model.device();
  at::Tensor beam_scores = at::full({batch, k}, kNegInf, at::TensorOptions().device(device));
  beam_scores.select(1, 0).zero_();
  at::Tensor history = at::empty({rows, 0}, at::kLong);
  at::Tensor next =
      at::full({rows, 1}, special.eos, at::TensorOptions().dtype(at::kLong).device(device));
  std::vector<Sentence> sentences(batch);
  int64_t remaining = batch;

  for (int64_t step = 0; remaining > 0; ++step) {
    for (int64_t b = 0; stop && b < batch; ++b) {
      if (!sentences[b].done && stop(b)) {
        sentences[b].done = true;
        --remaining;
      }
    }
    if (remaining == 0) break;
    at::Tensor logprobs = at::log_softmax(model.Decode(next, state).select(1, 0), -1);
    MaskNonOutputTokens(logprobs, special);
    ForceEosAtLimit(logprobs, step, max_lengths, special.eos);
    const int64_t vocab = logprobs.size(1);
    const at::Tensor candidates = (beam_scores.view({rows, 1}) + logprobs).view({batch, k * vocab});
    const auto [top_on_device, index_on_device] = candidates.topk(std::min(2 * k, k * vocab), 1);
    // The bookkeeping below runs on the host.
    const at::Tensor top_scores = top_on_device.cpu(), top_index = index_on_device.cpu();
    const auto score_a = top_scores.accessor<float, 2>();
    const auto index_a = top_index.accessor<int64_t, 2>();
    const auto history_a = history.accessor<int64_t, 2>();

    at::Tensor reorder = at::zeros({rows}, at::kLong);
    at::Tensor tokens = at::full({rows}, special.pad, at::kLong);
    at::Tensor scores = at::full({batch, k}, kNegInf, at::kFloat);
    auto reorder_a = reorder.accessor<int64_t, 1>();
    auto tokens_a = tokens.accessor<int64_t, 1>();
    auto scores_a = scores.accessor<float, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      Sentence& s = sentences[b];
      int64_t kept = 0;
      for (int64_t j = 0; j < top_scores.size(1) && !s.done; ++j) {
        const float score = score_a[b][j];
        if (score == kNegInf || (kept == k && j >= k)) break;
        const int64_t beam = index_a[b][j] / vocab;
        const int64_t token = index_a[b][j] % vocab;
        const int64_t row = b * k + beam;
        if (token == special.eos) {
          if (j >= k) continue;
          Hypothesis h;
          h.tokens.assign(&history_a[row][0], &history_a[row][0] + step);
          h.logprob = score;
          h.score = NormalizedScore(score, h.tokens.size() + 1, options.length_penalty);
          s.finished.push_back(std::move(h));
          if (static_cast<int64_t>(s.finished.size()) == k) {
            s.done = true;
            --remaining;
          }
        } else if (kept < k) {
          reorder_a[b * k + kept] = row;
          tokens_a[b * k + kept] = token;
          scores_a[b][kept] = score;
          ++kept;
        }
      }
      // A sentence whose limit forced </s> on every beam ends here even with fewer than K.
      // So does one left with no possible token (non-finite scores); if it has no finished
      // hypothesis yet, its first beam so far becomes one, with score -inf.
      if (!s.done && kept == 0) {
        if (s.finished.empty()) {
          Hypothesis h;
          const int64_t row = b * k;
          h.tokens.assign(&history_a[row][0], &history_a[row][0] + step);
          h.logprob = h.score = -std::numeric_limits<double>::infinity();
          s.finished.push_back(std::move(h));
        }
        s.done = true;
        --remaining;
      }
      for (int64_t j = kept; j < k; ++j) reorder_a[b * k + j] = b * k;  // dead rows
    }
    beam_scores = scores.to(device);
    history = at::cat({history.index_select(0, reorder), tokens.unsqueeze(1)}, 1);
    state.Reorder(reorder.to(device));
    next = tokens.unsqueeze(1).to(device);
  }

  std::vector<std::vector<Hypothesis>> out(batch);
  for (int64_t b = 0; b < batch; ++b) {
    auto& finished = sentences[b].finished;
    std::stable_sort(finished.begin(), finished.end(),
                     [](const Hypothesis& x, const Hypothesis& y) { return x.score > y.score; });
    finished.resize(std::min<size_t>(finished.size(), options.n_best));
    out[b] = std::move(finished);
  }
  return out;
}

}  // namespace normserve
