// Constraints every search applies to a step's log-probabilities [rows, V].
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "models/io/model_config.h"

namespace normserve {

// <pad> and <s> are never outputs, and neither is a token whose score is NaN (a model whose
// activations overflowed): its score becomes -inf, so that NaN never wins a comparison,
// poisons a hypothesis' running sum or breaks a sort. A row left with no token above -inf
// has nothing to decode; each search ends that sentence there.
void MaskNonOutputTokens(at::Tensor& logprobs, const SpecialTokens& special);

// Rows whose sentence has reached its length limit may only emit </s>. Row r belongs to
// sentence r / (rows / max_lengths.size()), so beam rows share their sentence's limit.
void ForceEosAtLimit(at::Tensor& logprobs, int64_t step, const std::vector<int64_t>& max_lengths,
                     int64_t eos);

}  // namespace normserve
