// Whole-batch beam search over a Transformer (the reference the step engine is tested
// against; the server decodes with decoding/step_engine.h), and forced-decoding scores. The
// caller has already tokenized and checked the inputs; these work on token ids.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "models/decoding/sentence_beams.h"
#include "models/transformer/transformer.h"

namespace normserve {

struct BeamOptions {
  int64_t beam_size = 4;
  int64_t n_best = 1;
  double length_penalty = 1.0;
};

// Asked before every step for each unfinished sentence; true stops that sentence where it is
// (its client went away). May be empty.
using StopSentence = std::function<bool(int64_t sentence)>;

// `memory` is the batch's encoder output. max_lengths[i] bounds sentence i's output tokens
// (sentence_beams.h has the rules). A stopped sentence returns the hypotheses finished so far.
std::vector<std::vector<Hypothesis>> BeamSearch(const Transformer& model,
                                                const EncoderOutput& memory,
                                                const std::vector<int64_t>& max_lengths,
                                                const BeamOptions& options,
                                                const StopSentence& stop = {});

// Log-probabilities of each target sequence (its tokens then </s>), by one forced-decoding
// pass; `memory` is the batch's encoder output for transformer_mt, empty for an LM.
std::vector<std::vector<double>> ScoreTargets(const Transformer& model, const EncoderOutput& memory,
                                              const std::vector<std::vector<int64_t>>& targets);

// Pads sequences on the right into a [B, T] int64 tensor on `device`.
at::Tensor PadBatch(const std::vector<std::vector<int64_t>>& sequences, int64_t pad,
                    const at::Device& device = at::kCPU);

}  // namespace normserve
