#include "models/decoding/token_mask.h"

#include <ATen/ATen.h>

#include <limits>

namespace normserve {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::vector<int64_t> NonOutputTokens(const SpecialTokens& special) {
  std::vector<int64_t> ids;
  if (special.pad != SpecialTokens::kNone) ids.push_back(special.pad);
  if (special.bos != special.eos) ids.push_back(special.bos);
  return ids;
}

void MaskNonOutputTokens(at::Tensor& logprobs, const SpecialTokens& special) {
  logprobs.masked_fill_(logprobs.isnan(), kNegInf);
  for (int64_t id : NonOutputTokens(special)) logprobs.select(1, id).fill_(kNegInf);
}

}  // namespace normserve
