#include "models/decoding/sampling.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "models/decoding/search.h"
#include "models/decoding/token_mask.h"

namespace normserve {
namespace {

// Keeps the top-k logits and the smallest set whose probability reaches top_p; the rest
// become -inf. logits is one row [V].
at::Tensor Truncate(at::Tensor logits, int64_t top_k, double top_p) {
  const int64_t vocab = logits.size(0);
  if (top_k > 0 && top_k < vocab) {
    const at::Tensor kth = std::get<0>(logits.topk(top_k)).select(0, top_k - 1);
    logits = logits.masked_fill(logits < kth, -std::numeric_limits<float>::infinity());
  }
  if (top_p < 1.0) {
    const auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
    const at::Tensor cumulative = at::softmax(sorted, 0).cumsum(0);
    // A token is dropped when the tokens before it already reach top_p.
    at::Tensor drop_sorted = (cumulative - at::softmax(sorted, 0)) >= top_p;
    const at::Tensor drop = at::zeros_like(drop_sorted).scatter(0, order, drop_sorted);
    logits = logits.masked_fill(drop, -std::numeric_limits<float>::infinity());
  }
  return logits;
}

}  // namespace

at::Generator MakeSamplingGenerator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

int64_t SampleToken(at::Tensor logits, const SpecialTokens& special, const SamplingOptions& options,
                    at::Generator& generator) {
  // A NaN or +inf logit (overflowed activations) leaves no distribution to sample from, as
  // log_softmax leaves none to the searches; nor does a row with nothing above -inf.
  if ((logits.isnan() | logits.isposinf()).any().item<bool>()) return -1;
  at::Tensor row = logits.unsqueeze(0);
  MaskNonOutputTokens(row, special);
  if (logits.max().item<float>() == -std::numeric_limits<float>::infinity()) return -1;
  // Below float's smallest normal number a temperature is greedy in effect, and dividing by
  // it (flushed to 0 by vectorized kernels) would give 0/0 = NaN.
  if (options.temperature < std::numeric_limits<float>::min()) {
    return logits.argmax().item<int64_t>();
  }
  // Shifted so that the best logit is 0 before dividing: a small temperature then gives
  // -inf, never +inf, which softmax would turn into NaN.
  const at::Tensor scaled = (logits - logits.max()) / options.temperature;
  const at::Tensor probs = at::softmax(Truncate(scaled, options.top_k, options.top_p), 0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).item<int64_t>();
}

SamplingStop SampleContinuation(const Transformer& model, const std::vector<int64_t>& prompt,
                                const SamplingOptions& options,
                                const std::function<bool(int64_t token)>& on_token) {
  const SpecialTokens& special = model.config().special;
  at::Generator generator = MakeSamplingGenerator(options.seed);
  DecoderState state = model.StartDecoding(EncoderOutput{}, 1);
  std::vector<int64_t> input = {special.decoder_start};
  input.insert(input.end(), prompt.begin(), prompt.end());
  at::Tensor next = PadBatch({input}, special.padding(), model.device());
  for (int64_t produced = 0; produced < options.max_new_tokens; ++produced) {
    // One row of logits: sampled on the host, where the seeded generator lives.
    const at::Tensor logits = model.Decode(next, state).select(0, 0).select(0, -1).cpu().clone();
    const int64_t token = SampleToken(logits, special, options, generator);
    if (token < 0 || token == special.eos) return SamplingStop::kEndOfSequence;
    if (!on_token(token)) return SamplingStop::kCallback;
    next = at::full({1, 1}, token, at::TensorOptions().dtype(at::kLong).device(model.device()));
  }
  return SamplingStop::kLength;
}

}  // namespace normserve
