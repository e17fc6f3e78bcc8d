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

}  // namespace normserve
