// Tiny random Transformers (MT and LM, pre- and post-norm, every norm kind): incremental
// decoding against full recomputation, cache reordering, greedy vs beam 1, an exhaustive
// check of beam search, and forced-decoding scores against an independent computation.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "models/decoding/sampling.h"
#include "models/decoding/search.h"
#include "models/errors.h"
#include "models/io/model_config.h"
#include "models/io/model_init.h"
#include "models/io/weight_store.h"
#include "models/transformer/transformer.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

using nlohmann::json;
using Tokens = std::vector<int64_t>;

constexpr int64_t kBos = 0, kPad = 1, kEos = 2, kUnk = 3;

struct ModelSpec {
  std::string name;
  bool mt = true;
  bool pre_norm = true;
  std::string activation = "relu";
  json norm;
  bool share_all = false;
  bool share_io = true;
  int64_t source_vocab = 11;
  int64_t target_vocab = 12;
};

void PrintTo(const ModelSpec& spec, std::ostream* os) { *os << spec.name; }

std::string ConfigJson(const ModelSpec& s) {
  json j = {{"architecture", s.mt ? "transformer_mt" : "transformer_lm"},
            {"embed_dim", 16},
            {"ffn_dim", 32},
            {"attention_heads", 2},
            {"decoder_layers", 2},
            {"normalize_before", s.pre_norm},
            {"activation", s.activation},
            {"max_positions", 64},
            {"share_decoder_input_output_embed", s.share_io},
            {"norm", s.norm}};
  if (s.mt) {
    j["encoder_layers"] = 2;
    j["share_all_embeddings"] = s.share_all;
    j["source_vocab_size"] = s.source_vocab;
    j["target_vocab_size"] = s.target_vocab;
    j["tokenizer"] = {{"source", "source.spm"}, {"target", "target.spm"}};
  } else {
    j["vocab_size"] = s.target_vocab;
    j["tokenizer"] = {{"model", "lm.spm"}};
  }
  return j.dump();
}

std::vector<ModelSpec> Specs() {
  std::vector<ModelSpec> specs;
  {
    ModelSpec s;
    s.name = "MtPreReluLayerNorm";
    s.norm = {{"default", {{"type", "layernorm"}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "MtPostGeluPowerNorm";
    s.pre_norm = false;
    s.activation = "gelu";
    s.norm = {{"default", {{"type", "powernorm"}, {"groups", 2}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "MtPreGeluMixedSharedEmbeddings";
    s.activation = "gelu";
    s.share_all = true;
    s.source_vocab = s.target_vocab = 12;
    s.norm = {{"default", {{"type", "batchnorm"}}},
              {"encoder_self_attn", {{"type", "powernorm"}, {"groups", 4}}},
              {"encoder_ffn", {{"type", "powernorm"}}},
              {"final", {{"type", "rmsnorm"}, {"bias", false}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "MtPostReluPartialRms";
    s.pre_norm = false;
    s.share_io = false;
    s.source_vocab = 9;
    s.norm = {{"default",
               {{"type", "prmsnorm"},
                {"p", 0.3},
                {"k_rounding", "floor"},
                {"eps_placement", "outside_sqrt"}}},
              {"decoder_cross_attn", {{"type", "layernorm"}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "LmPreGeluRmsNoBias";
    s.mt = false;
    s.activation = "gelu";
    s.target_vocab = 10;
    s.norm = {{"default", {{"type", "rmsnorm"}, {"bias", false}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "LmPostReluBatchNorm";
    s.mt = false;
    s.pre_norm = false;
    s.target_vocab = 9;
    s.norm = {{"default", {{"type", "batchnorm"}}}};
    specs.push_back(s);
  }
  {
    ModelSpec s;
    s.name = "LmPreReluPowerNormUnsharedOutput";
    s.mt = false;
    s.share_io = false;
    s.target_vocab = 11;
    s.norm = {{"default", {{"type", "powernorm"}, {"groups", 2}}},
              {"final", {{"type", "layernorm"}}}};
    specs.push_back(s);
  }
  return specs;
}

struct TinyModel {
  ModelConfig config;
  std::unique_ptr<Transformer> model;
  std::map<std::string, at::Tensor> tensors;
};

TinyModel Build(const ModelSpec& spec, uint64_t seed) {
  TinyModel m;
  m.config = ParseModelConfig(ConfigJson(spec), spec.name);
  WeightStore store = RandomWeightStore(seed);
  m.model = std::make_unique<Transformer>(m.config, store);
  m.tensors = store.tensors();
  return m;
}

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Real (non-special) tokens; ids from 3 (unk) up, as a model may be fed.
Tokens RandomTokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  Tokens t;
  for (int64_t i = 0; i < n; ++i) t.push_back(Uniform(rng, kUnk, vocab - 1));
  return t;
}

// Source sentences of varied length, each closed by </s>, as ServedModel builds them.
std::vector<Tokens> RandomSources(std::mt19937_64& rng, int64_t batch, int64_t vocab) {
  std::vector<Tokens> sources;
  for (int64_t b = 0; b < batch; ++b) {
    // An LM has no source vocabulary; its sources go unused.
    Tokens s = vocab > kUnk ? RandomTokens(rng, Uniform(rng, 1, 8), vocab) : Tokens{};
    s.push_back(kEos);
    sources.push_back(s);
  }
  return sources;
}

// Decoder inputs [B, T]: </s> then random tokens.
at::Tensor RandomDecoderInput(std::mt19937_64& rng, int64_t batch, int64_t steps, int64_t vocab) {
  std::vector<Tokens> rows;
  for (int64_t b = 0; b < batch; ++b) {
    Tokens row = {kEos};
    const Tokens rest = RandomTokens(rng, steps - 1, vocab);
    row.insert(row.end(), rest.begin(), rest.end());
    rows.push_back(row);
  }
  return PadBatch(rows, kPad);
}

EncoderOutput EncodeOrEmpty(const TinyModel& m, const std::vector<Tokens>& sources) {
  if (!m.config.is_mt()) return EncoderOutput{};
  return m.model->Encode(PadBatch(sources, kPad));
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  if (a.numel() == 0) return 0;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

constexpr double kAtol = 1e-4;

// Beam search with one beam: greedy search, one hypothesis per sentence.
std::vector<Hypothesis> Greedy(const Transformer& model, const EncoderOutput& memory,
                               const std::vector<int64_t>& max_lengths,
                               const StopSentence& stop = {}) {
  std::vector<Hypothesis> out;
  for (auto& found : BeamSearch(model, memory, max_lengths, {1, 1, 1.0}, stop)) {
    out.push_back(found.empty() ? Hypothesis{} : std::move(found.front()));
  }
  return out;
}

class TinyModelTest : public ::testing::TestWithParam<ModelSpec> {};

// (a) One token at a time through the KV cache, in random chunks, and all at once give the
// same logits at every position.
TEST_P(TinyModelTest, IncrementalDecodingMatchesFullRecomputation) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  const int64_t vocab = m.config.target_vocab_size;
  for (int trial = 0; trial < 3; ++trial) {
    const int64_t batch = Uniform(rng, 1, 4);
    const int64_t steps = Uniform(rng, 2, 10);
    const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
    const EncoderOutput memory = EncodeOrEmpty(m, sources);
    const at::Tensor tokens = RandomDecoderInput(rng, batch, steps, vocab);

    DecoderState full_state = m.model->StartDecoding(memory, batch);
    const at::Tensor full = m.model->Decode(tokens, full_state);
    ASSERT_EQ(full.sizes(), (at::IntArrayRef{batch, steps, vocab}));
    EXPECT_EQ(full.scalar_type(), at::kFloat);
    EXPECT_EQ(full_state.steps, steps);
    EXPECT_TRUE(at::isfinite(full).all().item<bool>());

    DecoderState one_state = m.model->StartDecoding(memory, batch);
    std::vector<at::Tensor> parts;
    for (int64_t t = 0; t < steps; ++t) {
      parts.push_back(m.model->Decode(tokens.narrow(1, t, 1), one_state));
    }
    EXPECT_EQ(one_state.steps, steps);
    EXPECT_LE(MaxAbsDiff(at::cat(parts, 1), full), kAtol) << "one token at a time";

    DecoderState chunk_state = m.model->StartDecoding(memory, batch);
    parts.clear();
    for (int64_t t = 0; t < steps;) {
      const int64_t n = std::min(steps - t, Uniform(rng, 1, 4));
      parts.push_back(m.model->Decode(tokens.narrow(1, t, n), chunk_state));
      t += n;
    }
    EXPECT_LE(MaxAbsDiff(at::cat(parts, 1), full), kAtol) << "random chunks";

    // A sentence decodes the same alone as in a padded batch.
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("sentence " + std::to_string(b) + " of " + std::to_string(batch));
      const EncoderOutput alone = EncodeOrEmpty(m, {sources[b]});
      if (m.config.is_mt()) {
        const auto length = static_cast<int64_t>(sources[b].size());
        EXPECT_LE(MaxAbsDiff(alone.states[0], memory.states[b].narrow(0, 0, length)), kAtol)
            << "encoder states of the real tokens depend on padding";
      }
      DecoderState state = m.model->StartDecoding(alone, 1);
      const at::Tensor logits = m.model->Decode(tokens.narrow(0, b, 1), state);
      EXPECT_LE(MaxAbsDiff(logits, full.narrow(0, b, 1)), kAtol) << "padding changed the result";
    }
  }
}

// (b) Reorder then continue == decoding the reordered prefixes from scratch. The contract
// (transformer.h): rows are `beams` consecutive rows per sentence sharing its encoder output,
// and every row takes the history of a row of its own sentence.
TEST_P(TinyModelTest, ReorderThenContinueMatchesFromScratch) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  const int64_t vocab = m.config.target_vocab_size;
  for (int trial = 0; trial < 4; ++trial) {
    const int64_t batch = Uniform(rng, 1, 3);
    const int64_t beams = Uniform(rng, 2, 4);
    const int64_t rows = batch * beams;
    const int64_t prefix_len = Uniform(rng, 1, 5);
    const int64_t suffix_len = Uniform(rng, 1, 4);
    const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
    const EncoderOutput sentences = EncodeOrEmpty(m, sources);
    const EncoderOutput memory =
        sentences.states.defined() ? sentences.Expand(beams) : EncoderOutput{};
    const at::Tensor prefix = RandomDecoderInput(rng, rows, prefix_len, vocab);
    // Rows drawn with repetition within their sentence, as beam search keeps the best beams.
    Tokens index_values;
    std::vector<Tokens> suffixes;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t sentence = r / beams;
      index_values.push_back(sentence * beams + Uniform(rng, 0, beams - 1));
      suffixes.push_back(RandomTokens(rng, suffix_len, vocab));
    }
    const at::Tensor index = at::tensor(index_values, at::kLong);
    const at::Tensor continued = PadBatch(suffixes, kPad);
    SCOPED_TRACE("index " + ::testing::PrintToString(index_values));

    DecoderState state = m.model->StartDecoding(memory, rows);
    if (trial % 2 == 0) {
      m.model->Decode(prefix, state);
    } else {
      for (int64_t t = 0; t < prefix_len; ++t) m.model->Decode(prefix.narrow(1, t, 1), state);
    }
    state.Reorder(index);
    std::vector<at::Tensor> parts;
    for (int64_t t = 0; t < suffix_len; ++t) {
      parts.push_back(m.model->Decode(continued.narrow(1, t, 1), state));
    }
    const at::Tensor after = at::cat(parts, 1);

    DecoderState fresh = m.model->StartDecoding(memory, rows);
    const at::Tensor whole = at::cat({prefix.index_select(0, index), continued}, 1);
    const at::Tensor expected = m.model->Decode(whole, fresh).narrow(1, prefix_len, suffix_len);
    EXPECT_LE(MaxAbsDiff(after, expected), kAtol);
  }
}

// Sum of a target's log-probs (its tokens, then </s>) computed independently: one sentence,
// Decode of [</s>] + target on a fresh state, log_softmax in double.
std::vector<double> IndependentLogprobs(const TinyModel& m, const EncoderOutput& one_memory,
                                        const Tokens& target) {
  Tokens input = {kEos};
  input.insert(input.end(), target.begin(), target.end());
  Tokens output = target;
  output.push_back(kEos);
  DecoderState state = m.model->StartDecoding(one_memory, 1);
  const at::Tensor logits = m.model->Decode(at::tensor(input, at::kLong).unsqueeze(0), state);
  const at::Tensor logprobs = at::log_softmax(logits.to(at::kDouble), -1)[0];
  std::vector<double> out;
  for (size_t t = 0; t < output.size(); ++t) {
    out.push_back(logprobs[static_cast<int64_t>(t)][output[t]].item<double>());
  }
  return out;
}

double Sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

EncoderOutput Row(const EncoderOutput& memory, int64_t b) {
  if (!memory.states.defined()) return memory;
  return {memory.states.narrow(0, b, 1), memory.memory_mask.narrow(0, b, 1)};
}

// (e) ScoreTargets per token and in total against the independent computation.
TEST_P(TinyModelTest, ScoreTargetsMatchesIndependentComputation) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  const int64_t vocab = m.config.target_vocab_size;
  for (int trial = 0; trial < 3; ++trial) {
    const int64_t batch = Uniform(rng, 1, 4);
    const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
    const EncoderOutput memory = EncodeOrEmpty(m, sources);
    std::vector<Tokens> targets;
    for (int64_t b = 0; b < batch; ++b) {
      targets.push_back(RandomTokens(rng, Uniform(rng, b == 0 ? 0 : 1, 9), vocab));
    }
    const auto scores = ScoreTargets(*m.model, memory, targets);
    ASSERT_EQ(scores.size(), targets.size());
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("target " + ::testing::PrintToString(targets[b]));
      ASSERT_EQ(scores[b].size(), targets[b].size() + 1);
      const EncoderOutput alone = EncodeOrEmpty(m, {sources[b]});
      const std::vector<double> expected = IndependentLogprobs(m, alone, targets[b]);
      for (size_t t = 0; t < expected.size(); ++t) {
        EXPECT_LE(scores[b][t], 0.0);
        EXPECT_NEAR(scores[b][t], expected[t], kAtol) << "token " << t;
      }
      EXPECT_NEAR(Sum(scores[b]), Sum(expected), kAtol * static_cast<double>(expected.size()));
    }
  }
}

// Greedy decoding of one sentence computed independently, on a fresh state with double
// log-probs: the best token at each step, never </s> at the first, ending at </s> (counted in
// the score's length) or after max_length tokens (not counted).
Hypothesis GreedyReference(const TinyModel& m, const EncoderOutput& memory, int64_t max_length) {
  DecoderState state = m.model->StartDecoding(memory, 1);
  Hypothesis h;
  at::Tensor next = at::full({1, 1}, kEos, at::kLong);
  for (int64_t step = 0; step < max_length; ++step) {
    at::Tensor logprobs =
        at::log_softmax(m.model->Decode(next, state).select(1, 0).to(at::kDouble), -1)[0];
    logprobs[kPad] = -INFINITY;
    logprobs[kBos] = -INFINITY;
    if (step == 0) logprobs[kEos] = -INFINITY;
    const int64_t best = logprobs.argmax().item<int64_t>();
    h.logprob += logprobs[best].item<double>();
    if (best == kEos) {
      h.score = h.logprob / static_cast<double>(h.tokens.size() + 1);
      return h;
    }
    h.tokens.push_back(best);
    next = at::full({1, 1}, best, at::kLong);
  }
  h.score = h.logprob / static_cast<double>(h.tokens.size());
  return h;
}

// (c) Beam search with one beam is greedy search, with the length rules of sentence_beams.h.
TEST_P(TinyModelTest, BeamOfOneIsGreedy) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  int limited = 0;
  for (int trial = 0; trial < 6; ++trial) {
    const TinyModel m = Build(GetParam(), seed + trial);  // a different model per trial
    const int64_t batch = Uniform(rng, 1, 4);
    const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
    const EncoderOutput memory = EncodeOrEmpty(m, sources);
    std::vector<int64_t> max_lengths;
    for (int64_t b = 0; b < batch; ++b) max_lengths.push_back(Uniform(rng, 1, 12));
    SCOPED_TRACE("max lengths " + ::testing::PrintToString(max_lengths));
    const std::vector<Hypothesis> greedy = Greedy(*m.model, memory, max_lengths);
    ASSERT_EQ(greedy.size(), static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("sentence " + std::to_string(b));
      const Hypothesis expected = GreedyReference(m, Row(memory, b), max_lengths[b]);
      EXPECT_EQ(greedy[b].tokens, expected.tokens);
      EXPECT_FALSE(greedy[b].tokens.empty());  // never </s> first
      EXPECT_NEAR(greedy[b].logprob, expected.logprob, kAtol * (expected.tokens.size() + 1));
      EXPECT_NEAR(greedy[b].score, expected.score, kAtol);
      EXPECT_LE(static_cast<int64_t>(greedy[b].tokens.size()), max_lengths[b]);
      if (static_cast<int64_t>(greedy[b].tokens.size()) == max_lengths[b]) ++limited;
    }
  }
  EXPECT_GT(limited, 0) << "no sentence reached its length limit";
}

// Beam search's hypotheses: sorted by score, score = logprob / (len + 1)^lp with the model's
// log-prob, within the length limit, distinct, and never <pad>, <s> or </s> inside.
TEST_P(TinyModelTest, BeamHypothesesAreConsistent) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  for (double length_penalty : {0.0, 0.6, 1.0, 2.5}) {
    SCOPED_TRACE("length penalty " + std::to_string(length_penalty));
    const int64_t batch = Uniform(rng, 1, 3);
    const int64_t beam_size = Uniform(rng, 2, 6);
    const int64_t n_best = Uniform(rng, 1, beam_size);
    const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
    const EncoderOutput memory = EncodeOrEmpty(m, sources);
    std::vector<int64_t> max_lengths;
    for (int64_t b = 0; b < batch; ++b) max_lengths.push_back(Uniform(rng, 1, 10));
    const auto found =
        BeamSearch(*m.model, memory, max_lengths, {beam_size, n_best, length_penalty});
    ASSERT_EQ(found.size(), static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE("sentence " + std::to_string(b));
      const auto& hyps = found[b];
      ASSERT_FALSE(hyps.empty());
      EXPECT_LE(static_cast<int64_t>(hyps.size()), n_best);
      std::set<Tokens> seen;
      for (size_t i = 0; i < hyps.size(); ++i) {
        const Hypothesis& h = hyps[i];
        if (i > 0) {
          EXPECT_GE(hyps[i - 1].score, h.score);
        }
        EXPECT_TRUE(seen.insert(h.tokens).second) << "duplicate hypothesis";
        EXPECT_LE(static_cast<int64_t>(h.tokens.size()), max_lengths[b]);
        for (int64_t t : h.tokens) {
          EXPECT_NE(t, kPad);
          EXPECT_NE(t, kBos);
          EXPECT_NE(t, kEos);
        }
        EXPECT_FALSE(h.tokens.empty());
        // A hypothesis at its length limit ends without </s>: neither its log-prob nor its
        // length counts one (sentence_beams.h).
        const bool at_limit = static_cast<int64_t>(h.tokens.size()) == max_lengths[b];
        auto forced = ScoreTargets(*m.model, Row(memory, b), {h.tokens})[0];
        if (at_limit) forced.pop_back();
        EXPECT_NEAR(h.logprob, Sum(forced), kAtol * (h.tokens.size() + 1));
        EXPECT_NEAR(h.score,
                    h.logprob / std::pow(static_cast<double>(forced.size()), length_penalty), 1e-6);
      }
    }
  }
}

// (f) Pre-norm models have a final norm after each stack; post-norm models have none.
TEST_P(TinyModelTest, FinalNormOnlyInPreNormModels) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  const TinyModel m = Build(GetParam(), seed);
  const bool pre = GetParam().pre_norm;
  EXPECT_EQ(m.tensors.count("decoder.layer_norm.weight"), pre ? 1u : 0u);
  if (m.config.is_mt()) {
    EXPECT_EQ(m.tensors.count("encoder.layer_norm.weight"), pre ? 1u : 0u);
  } else {
    for (const auto& [name, t] : m.tensors) {
      EXPECT_NE(name.rfind("encoder.", 0), 0u) << "an LM with encoder tensor " << name;
    }
  }
  // The layers' norms are there either way, with fairseq's names.
  EXPECT_EQ(m.tensors.count("decoder.layers.1.self_attn_layer_norm.weight"), 1u);
  EXPECT_EQ(m.tensors.count("decoder.layers.1.final_layer_norm.weight"), 1u);
  EXPECT_EQ(m.tensors.count("decoder.layers.0.encoder_attn_layer_norm.weight"),
            m.config.is_mt() ? 1u : 0u);
  EXPECT_EQ(m.tensors.count("decoder.output_projection.weight"), GetParam().share_io ? 0u : 1u);
  EXPECT_EQ(m.tensors.count("decoder.embed_tokens.weight"), GetParam().share_all ? 0u : 1u);
  EXPECT_GT(m.model->parameter_count(), 0);
}

// The model takes every tensor it needs and no more: a missing or a stray tensor names it.
TEST_P(TinyModelTest, MissingAndStrayTensorsAreNamed) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  {
    WeightStore store("exact.safetensors", m.tensors);
    const Transformer again(m.config, store);
    EXPECT_EQ(again.parameter_count(), m.model->parameter_count());
  }
  auto it = m.tensors.begin();
  std::advance(it, Uniform(rng, 0, static_cast<int64_t>(m.tensors.size()) - 1));
  const std::string victim = it->first;
  {
    std::map<std::string, at::Tensor> tensors = m.tensors;
    tensors.erase(victim);
    WeightStore store("missing.safetensors", tensors);
    try {
      Transformer broken(m.config, store);
      ADD_FAILURE() << "no error without " << victim;
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find("'" + victim + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos);
    }
  }
  {
    std::map<std::string, at::Tensor> tensors = m.tensors;
    tensors["decoder.layers.7.fc1.weight"] = at::zeros({32, 16});
    WeightStore store("stray.safetensors", tensors);
    try {
      Transformer broken(m.config, store);
      ADD_FAILURE() << "a stray tensor was accepted";
    } catch (const ModelLoadError& e) {
      EXPECT_NE(std::string(e.what()).find("decoder.layers.7.fc1.weight"), std::string::npos)
          << e.what();
    }
  }
}

// A stop callback ends only its sentence, which keeps the hypotheses finished so far; every
// other sentence decodes as without the callback.
TEST_P(TinyModelTest, StopCallbackEndsOnlyThatSentence) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  const int64_t batch = 3;
  const auto sources = RandomSources(rng, batch, m.config.source_vocab_size);
  const EncoderOutput memory = EncodeOrEmpty(m, sources);
  const std::vector<int64_t> max_lengths = {8, 8, 8};
  const int64_t stopped = Uniform(rng, 0, batch - 1);
  const int64_t after_steps = Uniform(rng, 0, 3);
  SCOPED_TRACE("sentence " + std::to_string(stopped) + " stops after " +
               std::to_string(after_steps) + " steps");
  const auto make_stop = [&](std::vector<int64_t>& calls) {
    return [&calls, stopped, after_steps](int64_t b) {
      return b == stopped && calls[b]++ >= after_steps;
    };
  };

  std::vector<int64_t> calls(batch, 0);
  for (const BeamOptions options : {BeamOptions{1, 1, 1.0}, BeamOptions{3, 3, 1.0}}) {
    SCOPED_TRACE("beam " + std::to_string(options.beam_size));
    const auto beam = BeamSearch(*m.model, memory, max_lengths, options);
    std::fill(calls.begin(), calls.end(), 0);
    const auto beam_cut = BeamSearch(*m.model, memory, max_lengths, options, make_stop(calls));
    ASSERT_EQ(beam_cut.size(), beam.size());
    for (int64_t b = 0; b < batch; ++b) {
      if (b == stopped) {
        EXPECT_LE(beam_cut[b].size(), beam[b].size());
        for (const Hypothesis& h : beam_cut[b]) {
          EXPECT_LT(static_cast<int64_t>(h.tokens.size()), std::max<int64_t>(after_steps, 1));
        }
        continue;
      }
      ASSERT_EQ(beam_cut[b].size(), beam[b].size()) << "sentence " << b;
      for (size_t i = 0; i < beam[b].size(); ++i) {
        EXPECT_EQ(beam_cut[b][i].tokens, beam[b][i].tokens) << "sentence " << b;
        EXPECT_NEAR(beam_cut[b][i].score, beam[b][i].score, kAtol) << "sentence " << b;
      }
    }
  }
}

// Positions run out after max_positions tokens: exactly that many decode, one more throws.
TEST_P(TinyModelTest, DecodesUpToMaxPositions) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  const TinyModel m = Build(GetParam(), seed);
  const int64_t limit = m.config.max_positions;
  const auto sources = RandomSources(rng, 1, m.config.source_vocab_size);
  const EncoderOutput memory = EncodeOrEmpty(m, sources);
  DecoderState state = m.model->StartDecoding(memory, 1);
  const at::Tensor tokens = RandomDecoderInput(rng, 1, limit, m.config.target_vocab_size);
  const at::Tensor logits = m.model->Decode(tokens, state);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  EXPECT_THROW(m.model->Decode(tokens.narrow(1, 0, 1), state), std::out_of_range);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyModelTest, ::testing::ValuesIn(Specs()),
                         [](const ::testing::TestParamInfo<ModelSpec>& info) {
                           return info.param.name;
                         });

// ---------------------------------------------------------------------------------------
// (g) Non-finite logits (a model whose activations overflowed, or weights that slipped past
// the load check) must neither throw nor decode past max_positions: a sentence with no
// possible token ends there with score -inf, and NaN never reaches a score.

// The model with its tensors copied and changed by `poison`.
std::unique_ptr<Transformer> Poisoned(
    const TinyModel& m, const std::function<void(std::map<std::string, at::Tensor>&)>& poison) {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, t] : m.tensors) tensors[name] = t.clone();
  poison(tensors);
  WeightStore store("poisoned", std::move(tensors));
  return std::make_unique<Transformer>(m.config, store);
}

void ExpectSaneHypothesis(const Hypothesis& h, int64_t max_length, int64_t vocab) {
  EXPECT_FALSE(std::isnan(h.logprob));
  EXPECT_FALSE(std::isnan(h.score));
  EXPECT_LE(h.logprob, 0.0);
  EXPECT_LE(static_cast<int64_t>(h.tokens.size()), max_length);
  for (int64_t t : h.tokens) {
    EXPECT_TRUE(t >= 0 && t < vocab) << t;
    EXPECT_NE(t, kPad);
    EXPECT_NE(t, kBos);
    EXPECT_NE(t, kEos);
  }
}

// Every search over `model`, which must end without an exception; returns greedy's output.
std::vector<Hypothesis> ExpectSearchesEnd(const Transformer& model, const EncoderOutput& memory,
                                          const std::vector<int64_t>& max_lengths) {
  const int64_t vocab = model.config().target_vocab_size;
  std::vector<Hypothesis> greedy;
  EXPECT_NO_THROW(greedy = Greedy(model, memory, max_lengths));
  EXPECT_EQ(greedy.size(), max_lengths.size());
  for (size_t b = 0; b < greedy.size(); ++b) ExpectSaneHypothesis(greedy[b], max_lengths[b], vocab);
  for (int64_t beam : {2, 5}) {
    SCOPED_TRACE("beam " + std::to_string(beam));
    std::vector<std::vector<Hypothesis>> found;
    EXPECT_NO_THROW(found = BeamSearch(model, memory, max_lengths, {beam, beam, 1.0}));
    EXPECT_EQ(found.size(), max_lengths.size());
    for (size_t b = 0; b < found.size(); ++b) {
      EXPECT_FALSE(found[b].empty()) << "sentence " << b << " has no hypothesis";
      for (const Hypothesis& h : found[b]) ExpectSaneHypothesis(h, max_lengths[b], vocab);
    }
  }
  return greedy;
}

ModelSpec UnsharedOutputSpec(bool mt) {
  ModelSpec s;
  s.name = mt ? "MtUnsharedOutput" : "LmUnsharedOutput";
  s.mt = mt;
  s.share_io = false;
  s.norm = {{"default", {{"type", "layernorm"}}}};
  return s;
}

TEST(NonFiniteLogitsTest, NaNOrInfFromTheFirstStepEndsEverySentence) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  for (bool mt : {true, false}) {
    const TinyModel m = Build(UnsharedOutputSpec(mt), seed);
    const int64_t vocab = m.config.target_vocab_size;
    const auto sources = RandomSources(rng, 3, m.config.source_vocab_size);
    const EncoderOutput memory = EncodeOrEmpty(m, sources);
    // Up to max_positions - 1 output tokens: a search that never ends would decode past it.
    const std::vector<int64_t> max_lengths = {m.config.max_positions - 1, 5, 1};
    const std::vector<std::pair<std::string, std::function<void(at::Tensor&)>>> poisons = {
        {"every logit NaN", [](at::Tensor& w) { w.fill_(NAN); }},
        {"</s> logit NaN", [](at::Tensor& w) { w[kEos].fill_(NAN); }},
        // Logits h[0] * inf and h[0] * -inf: one of them is +inf.
        {"one logit +inf",
         [](at::Tensor& w) {
           w.narrow(0, kUnk, 2).zero_();
           w[kUnk][0].fill_(INFINITY);
           w[kUnk + 1][0].fill_(-INFINITY);
         }},
        {"every weight -inf", [](at::Tensor& w) { w.fill_(-INFINITY); }},
    };
    for (const auto& [what, poison] : poisons) {
      SCOPED_TRACE(std::string(mt ? "MT, " : "LM, ") + what);
      const auto model = Poisoned(m, [&](std::map<std::string, at::Tensor>& tensors) {
        poison(tensors.at("decoder.output_projection.weight"));
      });
      const auto greedy = ExpectSearchesEnd(*model, memory, max_lengths);
      for (const Hypothesis& h : greedy) {
        EXPECT_TRUE(h.tokens.empty()) << ::testing::PrintToString(h.tokens);
        EXPECT_EQ(h.score, -INFINITY);
      }
      // Scoring reports what the model says (NaN or -inf), without an exception.
      EXPECT_NO_THROW(ScoreTargets(*model, memory, {{kUnk}, {kUnk + 1, kUnk}, {}}));
      // Sampling ends at once too, for any temperature.
      if (!mt) {
        for (double temperature : {0.0, 1.0}) {
          std::vector<int64_t> produced;
          SamplingStop why = SamplingStop::kCallback;
          EXPECT_NO_THROW(why = SampleContinuation(*model, {kUnk + 1},
                                                   {temperature, 0, 1.0, seed, 20},
                                                   [&](int64_t token) {
                                                     produced.push_back(token);
                                                     return true;
                                                   }));
          EXPECT_EQ(why, SamplingStop::kEndOfSequence);
          EXPECT_TRUE(produced.empty()) << vocab;
        }
      }
    }
  }
}

// A temperature far below float's range (1e-40 is a valid request) divides logits into
// +inf unless sampling guards against it; it must sample greedily, not throw.
TEST(NonFiniteLogitsTest, TinyTemperatureSamplesGreedily) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  const TinyModel m = Build(UnsharedOutputSpec(false), seed);
  const auto sample = [&](double temperature) {
    std::vector<int64_t> produced;
    SampleContinuation(*m.model, {kUnk + 1}, {temperature, 0, 1.0, seed, 12}, [&](int64_t token) {
      produced.push_back(token);
      return true;
    });
    return produced;
  };
  const std::vector<int64_t> greedy = sample(0);
  for (double temperature : {1e-40, 1e-300}) {
    SCOPED_TRACE("temperature " + std::to_string(temperature));
    std::vector<int64_t> tiny;
    EXPECT_NO_THROW(tiny = sample(temperature));
    EXPECT_EQ(tiny, greedy);
  }
}

// NaN that appears mid-sentence: a model whose first step is finite, but whose every real
// token embeds to NaN, so that each sentence's second step has no possible token.
TEST(NonFiniteLogitsTest, NaNAfterTheFirstTokenEndsTheSentenceThere) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  for (bool mt : {true, false}) {
    SCOPED_TRACE(mt ? "MT" : "LM");
    // Random models often answer </s> at once; take the first whose greedy output has tokens.
    int trial = 0;
    for (; trial < 40; ++trial) {
      const TinyModel m = Build(UnsharedOutputSpec(mt), seed + trial);
      const auto sources = RandomSources(rng, 2, m.config.source_vocab_size);
      const EncoderOutput memory = EncodeOrEmpty(m, sources);
      const std::vector<int64_t> max_lengths = {m.config.max_positions - 1,
                                                m.config.max_positions - 1};
      const std::vector<Hypothesis> clean = Greedy(*m.model, memory, max_lengths);
      if (clean[0].tokens.empty()) continue;
      const auto model = Poisoned(m, [](std::map<std::string, at::Tensor>& tensors) {
        const int64_t rows = tensors.at("decoder.embed_tokens.weight").size(0);
        tensors.at("decoder.embed_tokens.weight").narrow(0, kUnk, rows - kUnk).fill_(NAN);
      });
      const auto greedy = ExpectSearchesEnd(*model, memory, max_lengths);
      ASSERT_EQ(greedy.size(), 2u);
      // The first token is the clean model's; then nothing is possible.
      EXPECT_EQ(greedy[0].tokens, Tokens{clean[0].tokens[0]});
      EXPECT_EQ(greedy[0].score, -INFINITY);
      break;
    }
    EXPECT_LT(trial, 40) << "no model in 40 produced a token";
  }
}

// ---------------------------------------------------------------------------------------
// (d) Exhaustive check of beam search on a model small enough to enumerate every output.

void Enumerate(const Tokens& alphabet, int64_t max_len, Tokens& prefix, std::vector<Tokens>& out) {
  out.push_back(prefix);
  if (static_cast<int64_t>(prefix.size()) == max_len) return;
  for (int64_t t : alphabet) {
    prefix.push_back(t);
    Enumerate(alphabet, max_len, prefix, out);
    prefix.pop_back();
  }
}

struct Scored {
  Tokens tokens;
  double logprob;
  double score;
};

TEST(BeamSearchExhaustiveTest, FindsTheBestSequences) {
  NORMSERVE_TEST_SEED(seed);
  c10::InferenceMode guard;
  std::mt19937_64 rng(seed);
  // (target vocabulary, max length): 4 specials + 2 real tokens up to 3 tokens, and
  // 4 specials + 3 real tokens up to 2. <unk> is an output token too (as in fairseq), so the
  // alphabets have 3 and 4 tokens: 40 and 21 sequences, all within one beam of 64, so that
  // beam search is exhaustive and must return exactly the best ones.
  const std::vector<std::pair<int64_t, int64_t>> setups = {{6, 3}, {7, 2}};
  const std::vector<json> norms = {
      {{"default", {{"type", "layernorm"}}}},
      {{"default", {{"type", "powernorm"}, {"groups", 2}}},
       {"decoder_ffn", {{"type", "batchnorm"}}}},
  };
  int model_index = 0;
  for (const auto& [vocab, max_len] : setups) {
    for (const json& norm : norms) {
      ModelSpec spec;
      spec.name = "exhaustive";
      spec.target_vocab = vocab;
      spec.source_vocab = 8;
      spec.pre_norm = model_index % 2 == 0;
      spec.norm = norm;
      const TinyModel m = Build(spec, seed + model_index++);
      SCOPED_TRACE("vocab " + std::to_string(vocab) + ", max length " + std::to_string(max_len) +
                   ", norm " + norm.dump());

      Tokens alphabet;
      for (int64_t t = 0; t < vocab; ++t) {
        if (t != kBos && t != kPad && t != kEos) alphabet.push_back(t);
      }
      std::vector<Tokens> all;
      Tokens prefix;
      Enumerate(alphabet, max_len, prefix, all);
      ASSERT_LE(static_cast<int64_t>(all.size()), 64);

      const auto sources = RandomSources(rng, 2, spec.source_vocab);
      const EncoderOutput memory = m.model->Encode(PadBatch(sources, kPad));
      for (double length_penalty : {0.0, 1.0, 2.0}) {
        SCOPED_TRACE("length penalty " + std::to_string(length_penalty));
        const auto found =
            BeamSearch(*m.model, memory, {max_len, max_len}, {64, 5, length_penalty});
        ASSERT_EQ(found.size(), 2u);
        for (int64_t b = 0; b < 2; ++b) {
          SCOPED_TRACE("sentence " + std::to_string(b));
          const auto logprobs =
              ScoreTargets(*m.model, Row(memory, b).Expand(static_cast<int64_t>(all.size())), all);
          std::vector<Scored> exact;
          std::map<Tokens, double> score_of, logprob_of;
          for (size_t i = 0; i < all.size(); ++i) {
            // No empty output; at the length limit, no </s> (sentence_beams.h).
            if (all[i].empty()) continue;
            std::vector<double> terms = logprobs[i];
            if (static_cast<int64_t>(all[i].size()) == max_len) terms.pop_back();
            const double lp = Sum(terms);
            const double score = lp / std::pow(static_cast<double>(terms.size()), length_penalty);
            exact.push_back({all[i], lp, score});
            score_of[all[i]] = score;
            logprob_of[all[i]] = lp;
          }
          std::stable_sort(exact.begin(), exact.end(),
                           [](const Scored& x, const Scored& y) { return x.score > y.score; });

          ASSERT_EQ(found[b].size(), 5u);
          for (size_t r = 0; r < 5; ++r) {
            SCOPED_TRACE("rank " + std::to_string(r));
            const Hypothesis& h = found[b][r];
            ASSERT_TRUE(score_of.count(h.tokens)) << ::testing::PrintToString(h.tokens);
            EXPECT_NEAR(h.score, exact[r].score, 1e-4);
            EXPECT_NEAR(h.logprob, logprob_of[h.tokens], 1e-4);
            if (h.tokens != exact[r].tokens) {
              // Only a tie (within float noise) may swap two sequences.
              EXPECT_NEAR(score_of[h.tokens], exact[r].score, 1e-4)
                  << "beam " << ::testing::PrintToString(h.tokens) << ", exhaustive "
                  << ::testing::PrintToString(exact[r].tokens);
            }
          }
        }
      }
    }
  }
}

TEST(PadBatchTest, PadsOnTheRight) {
  const at::Tensor t = PadBatch({{5, 6, 7}, {}, {9}}, kPad);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 3}));
  EXPECT_EQ(t.scalar_type(), at::kLong);
  const std::vector<int64_t> expected = {5, 6, 7, 1, 1, 1, 9, 1, 1};
  const at::Tensor flat = t.reshape({-1}).contiguous();
  EXPECT_EQ(std::vector<int64_t>(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + 9), expected);
}

}  // namespace
}  // namespace normserve
