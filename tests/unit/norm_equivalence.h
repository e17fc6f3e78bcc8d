// Comparisons of a Pre-LN model with its Pre-RMSNorm or Pre-CRMSNorm conversion
// (models/io/norm_conversion.h) on random inputs: logits, scores, greedy and beam outputs. Shared
// by the unit tests on enlm and on init-made models and by the trainer's test on a trained model.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/decoding/search.h"
#include "models/io/norm_conversion.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/transformer/transformer.h"

namespace normserve::testing {

using Tokens = std::vector<int64_t>;
using Weights = std::map<std::string, at::Tensor>;

constexpr int64_t kInputs = 500;  // per greedy, beam and score comparison
constexpr int64_t kChunk = 100;   // inputs per model call
constexpr double kFp32Tolerance = 1e-4;

struct Model {
  ModelConfig config;
  std::unique_ptr<Transformer> transformer;
};

inline Model Build(const ModelConfig& config, Weights weights) {
  WeightStore store("test weights", std::move(weights));
  return {config, std::make_unique<Transformer>(config, store)};
}

// The original model and its conversion, from the same weights.
struct Pair {
  Model original, converted;
};

// The conversion targets, and their names for test names and figures.
constexpr NormKind kTargets[] = {NormKind::kRMSNorm, NormKind::kCRMSNorm};
inline std::string TargetName(NormKind target) { return std::string(NormKindName(target)); }

inline Pair BuildPair(const ModelConfig& config, const Weights& weights, NormKind target) {
  Weights converted = weights;  // the conversion replaces entries, never edits a tensor
  const ModelConfig converted_config = ConvertNorm(config, converted, target, "test weights");
  return {Build(config, weights), Build(converted_config, std::move(converted))};
}

// Every tensor rounded to `dtype` and back: what loading a file of that dtype gives.
inline Weights RoundTo(const Weights& weights, at::ScalarType dtype) {
  Weights out;
  for (const auto& [name, t] : weights) out[name] = t.to(dtype).to(at::kFloat);
  return out;
}

inline int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Sequences of ordinary tokens (ids above the special ones), lengths in [min, max].
inline std::vector<Tokens> RandomSequences(std::mt19937_64& rng, int64_t count, int64_t min_length,
                                           int64_t max_length, int64_t vocab,
                                           const SpecialTokens& s) {
  const int64_t first = std::max({s.bos, s.pad, s.eos, s.unk}) + 1;
  std::vector<Tokens> out;
  for (int64_t i = 0; i < count; ++i) {
    Tokens t;
    for (int64_t n = Uniform(rng, min_length, max_length); n > 0; --n) {
      t.push_back(Uniform(rng, first, vocab - 1));
    }
    out.push_back(std::move(t));
  }
  return out;
}

inline std::vector<Tokens> Slice(const std::vector<Tokens>& all, size_t begin, size_t count) {
  return {all.begin() + begin, all.begin() + std::min(all.size(), begin + count)};
}

inline EncoderOutput EncodeSources(const Model& m, const std::vector<Tokens>& sources) {
  if (!m.config.is_mt()) return {};
  std::vector<Tokens> closed = sources;
  for (Tokens& s : closed) s.push_back(m.config.special.eos);
  return m.transformer->Encode(PadBatch(closed, m.config.special.pad));
}

// Logits [B, T, V] of decoding </s> + target for each source (sources empty for an LM).
inline at::Tensor Logits(const Model& m, const std::vector<Tokens>& sources,
                         const std::vector<Tokens>& targets) {
  std::vector<Tokens> inputs;
  for (const Tokens& t : targets) {
    inputs.push_back({m.config.special.eos});
    inputs.back().insert(inputs.back().end(), t.begin(), t.end());
  }
  DecoderState state =
      m.transformer->StartDecoding(EncodeSources(m, sources), static_cast<int64_t>(inputs.size()));
  return m.transformer->Decode(PadBatch(inputs, m.config.special.pad), state);
}

inline double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The largest logit difference over `batches` batches of 8 random sequences of up to 48
// tokens (all the model's positions when it has fewer).
inline double MaxLogitDiff(const Pair& p, std::mt19937_64& rng, int batches) {
  const ModelConfig& c = p.original.config;
  const int64_t length = std::min<int64_t>(48, c.max_positions) - 1;  // and </s>
  double worst = 0;
  for (int b = 0; b < batches; ++b) {
    std::vector<Tokens> sources;
    if (c.is_mt()) sources = RandomSequences(rng, 8, 1, length, c.source_vocab_size, c.special);
    const auto targets = RandomSequences(rng, 8, length, length, c.target_vocab_size, c.special);
    worst = std::max(worst, MaxAbsDiff(Logits(p.original, sources, targets),
                                       Logits(p.converted, sources, targets)));
  }
  return worst;
}

// The largest difference of the per-token log-probabilities over kInputs scored targets.
inline double MaxScoreDiff(const Pair& p, std::mt19937_64& rng) {
  const ModelConfig& c = p.original.config;
  const auto targets = RandomSequences(rng, kInputs, 1, 30, c.target_vocab_size, c.special);
  std::vector<Tokens> sources;
  if (c.is_mt()) sources = RandomSequences(rng, kInputs, 1, 30, c.source_vocab_size, c.special);
  double worst = 0;
  for (size_t begin = 0; begin < targets.size(); begin += kChunk) {
    const auto t = Slice(targets, begin, kChunk);
    const auto s = c.is_mt() ? Slice(sources, begin, kChunk) : std::vector<Tokens>{};
    const auto a = ScoreTargets(*p.original.transformer, EncodeSources(p.original, s), t);
    const auto b = ScoreTargets(*p.converted.transformer, EncodeSources(p.converted, s), t);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].size(), b[i].size());
      for (size_t k = 0; k < a[i].size() && k < b[i].size(); ++k) {
        worst = std::max(worst, std::abs(a[i][k] - b[i][k]));
      }
    }
  }
  return worst;
}

// An LM's greedy continuations [B, steps] of prompts of equal length.
inline at::Tensor GreedyContinuations(const Model& m, const std::vector<Tokens>& prompts,
                                      int steps) {
  DecoderState state = m.transformer->StartDecoding({}, static_cast<int64_t>(prompts.size()));
  at::Tensor next = m.transformer->Decode(PadBatch(prompts, m.config.special.pad), state)
                        .select(1, -1)
                        .argmax(-1, /*keepdim=*/true);
  std::vector<at::Tensor> out = {next};
  for (int s = 1; s < steps; ++s) {
    next = m.transformer->Decode(next, state).select(1, -1).argmax(-1, /*keepdim=*/true);
    out.push_back(next);
  }
  return at::cat(out, 1);
}

// Counts the kInputs prompts whose greedy continuation differs.
inline int64_t LmGreedyMismatches(const Pair& p, std::mt19937_64& rng) {
  const ModelConfig& c = p.original.config;
  const auto prompts = RandomSequences(rng, kInputs, 8, 8, c.target_vocab_size, c.special);
  int64_t mismatches = 0;
  for (size_t begin = 0; begin < prompts.size(); begin += kChunk) {
    const auto chunk = Slice(prompts, begin, kChunk);
    const at::Tensor a = GreedyContinuations(p.original, chunk, 16);
    const at::Tensor b = GreedyContinuations(p.converted, chunk, 16);
    mismatches += a.ne(b).any(1).sum().item<int64_t>();
  }
  return mismatches;
}

// Counts the kInputs sources whose greedy or beam (4 beams, 2-best) hypotheses differ in
// tokens, and records the largest score difference of hypotheses that agree.
struct SearchComparison {
  int64_t greedy_mismatches = 0;
  int64_t beam_mismatches = 0;
  double max_score_diff = 0;
};

inline SearchComparison CompareMtSearch(const Pair& p, std::mt19937_64& rng) {
  const ModelConfig& c = p.original.config;
  const auto sources = RandomSequences(rng, kInputs, 1, 20, c.source_vocab_size, c.special);
  SearchComparison r;
  const auto compare = [&r](const Hypothesis& a, const Hypothesis& b) {
    if (a.tokens != b.tokens) return false;
    r.max_score_diff = std::max(r.max_score_diff, std::abs(a.score - b.score));
    return true;
  };
  for (size_t begin = 0; begin < sources.size(); begin += kChunk) {
    const auto chunk = Slice(sources, begin, kChunk);
    const std::vector<int64_t> max_lengths(chunk.size(), 24);
    const EncoderOutput ma = EncodeSources(p.original, chunk);
    const EncoderOutput mb = EncodeSources(p.converted, chunk);
    const BeamOptions greedy{1, 1, 1.0};
    const auto ga = BeamSearch(*p.original.transformer, ma, max_lengths, greedy);
    const auto gb = BeamSearch(*p.converted.transformer, mb, max_lengths, greedy);
    const BeamOptions beam{4, 2, 1.0};
    const auto ba = BeamSearch(*p.original.transformer, ma, max_lengths, beam);
    const auto bb = BeamSearch(*p.converted.transformer, mb, max_lengths, beam);
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (ga[i].size() != 1 || gb[i].size() != 1 || !compare(ga[i][0], gb[i][0])) {
        ++r.greedy_mismatches;
      }
      bool same = ba[i].size() == bb[i].size();
      for (size_t k = 0; same && k < ba[i].size(); ++k) same = compare(ba[i][k], bb[i][k]);
      if (!same) ++r.beam_mismatches;
    }
  }
  return r;
}

inline void PrintFigure(const std::string& model, const std::string& what, double value) {
  std::cout << "[ figures  ] " << model << ": " << what << " = " << value << std::endl;
}

// The weights of one version directory, as the server loads them.
inline Weights LoadDirWeights(const std::string& dir) {
  return LoadWeights(dir + "/model.safetensors");
}

// The whole check of an MT pair: logits, scores of kInputs pairs, greedy and beam outputs of
// kInputs sources; prints each figure under `name`.
inline void ExpectEquivalentMt(const Pair& p, std::mt19937_64& rng, const std::string& name) {
  const double logits = MaxLogitDiff(p, rng, 4);
  PrintFigure(name, "max |logit difference|", logits);
  EXPECT_LE(logits, kFp32Tolerance);
  const double scores = MaxScoreDiff(p, rng);
  PrintFigure(name, "max |token log-prob difference| over 500 pairs", scores);
  EXPECT_LE(scores, kFp32Tolerance);
  const SearchComparison search = CompareMtSearch(p, rng);
  PrintFigure(name, "greedy outputs that differ, of 500", search.greedy_mismatches);
  PrintFigure(name, "beam (4, 2-best) outputs that differ, of 500", search.beam_mismatches);
  PrintFigure(name, "max |hypothesis score difference|", search.max_score_diff);
  EXPECT_EQ(search.greedy_mismatches, 0);
  // Random-weight models rarely emit </s>, so most beams run to the length limit, and over 24
  // steps of 4 beams two candidates can come within float noise (1e-6) of each other: the two
  // models then keep different but equally good paths. One such input in 500 was seen
  // (both hypotheses at the limit, scores -3.359 and -3.373); a conversion error moves every
  // output (leaving out one recentring step changes logits by 0.03 to 1.7).
  EXPECT_LE(search.beam_mismatches, 2);
  EXPECT_LE(search.max_score_diff, kFp32Tolerance);
}

}  // namespace normserve::testing
