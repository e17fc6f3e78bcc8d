#include "models/decoding/token_mask.h"

#include <ATen/ATen.h>

#include <limits>

namespace normserve {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void MaskNonOutputTokens(at::Tensor& logprobs, const SpecialTokens& special) {
  logprobs.masked_fill_(logprobs.isnan(), kNegInf);
  logprobs.select(1, special.pad).fill_(kNegInf);
  if (special.bos != special.eos) logprobs.select(1, special.bos).fill_(kNegInf);
}

void ForceEosAtLimit(at::Tensor& logprobs, int64_t step, const std::vector<int64_t>& max_lengths,
                     int64_t eos) {
  const int64_t per_sentence = logprobs.size(0) / static_cast<int64_t>(max_lengths.size());
  for (size_t s = 0; s < max_lengths.size(); ++s) {
    if (step < max_lengths[s]) continue;
    at::Tensor rows = logprobs.narrow(0, static_cast<int64_t>(s) * per_sentence, per_sentence);
    const at::Tensor eos_column = rows.select(1, eos).clone();
    rows.fill_(kNegInf);
    rows.select(1, eos).copy_(eos_column);
  }
}

}  // namespace normserve
