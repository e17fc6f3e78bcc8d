// Constraints every search and sampler applies to a step's log-probabilities [rows, V].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "models/io/model_config.h"

namespace normserve {

// <pad> (where the model has one) and <s> (unless it is </s>, as in some fairseq
// dictionaries) are never outputs.
std::vector<int64_t> NonOutputTokens(const SpecialTokens& special);

// Sets the non-output tokens to -inf, and every token whose score is NaN (a model whose
// activations overflowed): NaN becomes -inf, so that NaN never wins a comparison,
// poisons a hypothesis' running sum or breaks a sort. A row left with no token above -inf
// has nothing to decode; each search ends that sentence there.
void MaskNonOutputTokens(at::Tensor& logprobs, const SpecialTokens& special);

}  // namespace normserve
