// Constraints every search and sampler applies to a step's log-probabilities [rows, V].
#pragma once

#include <ATen/core/Tensor.h>

#include "models/io/model_config.h"

namespace normserve {

// <pad> and <s> are never outputs, and neither is a token whose score is NaN (a model whose
// activations overflowed): its score becomes -inf, so that NaN never wins a comparison,
// poisons a hypothesis' running sum or breaks a sort. A row left with no token above -inf
// has nothing to decode; each search ends that sentence there.
void MaskNonOutputTokens(at::Tensor& logprobs, const SpecialTokens& special);

}  // namespace normserve
