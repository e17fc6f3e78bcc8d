// The host side of a decoding step on CPU fp32 logits, without an ATen call per row: each
// row's log-probabilities with the output mask (token_mask.h) and its beam's score added, in
// one pass, and a row's best candidates in one more. ATen's log_softmax, masks and topk took
// most of a step's non-GEMM time at 128 rows.
#pragma once

#include <cstdint>
#include <vector>

namespace normserve {

// In place: logits [rows, vocab] become log_softmax(row) + offsets[row] (offsets may be
// null), with the `never_output` ids at -inf (NonOutputTokens of token_mask.h). A row holding
// a NaN becomes all -inf: it has no distribution to choose from.
void LogProbRows(float* logits, int64_t rows, int64_t vocab, const float* offsets,
                 const std::vector<int64_t>& never_output);

// The `count` largest of values[0..n), best first, ties by lower index; fewer when n is
// smaller. -inf values come last like any other.
void TopCandidates(const float* values, int64_t n, int64_t count, float* scores, int64_t* indices);

}  // namespace normserve
