// The Pre-LN -> Pre-RMSNorm conversion (models/io/norm_conversion.h) is lossless: on the
// bundled enlm and on transformer_mt models written by InitModelDirectory (what
// `normserve-model init` runs), with tied, untied and shared embeddings, the converted model
// gives the same logits, the same greedy and beam outputs on 500 inputs and the same scores,
// in fp32 and from fp16 weights; models that are not Pre-LN are refused with the reason.
// The figures are printed ([ figures ] lines) for the closing note.
#include "models/io/norm_conversion.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "models/decoding/search.h"
#include "models/errors.h"
#include "models/io/model_init.h"
#include "models/io/safetensors.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/served_model.h"
#include "models/transformer/transformer.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Tokens = std::vector<int64_t>;
using Weights = std::map<std::string, at::Tensor>;

constexpr int64_t kInputs = 500;  // per greedy, beam and score comparison
constexpr int64_t kChunk = 100;   // inputs per model call
constexpr double kFp32Tolerance = 1e-4;

std::string EnlmDir() { return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/enlm/1"; }

struct Model {
  ModelConfig config;
  std::unique_ptr<Transformer> transformer;
};

Model Build(const ModelConfig& config, Weights weights) {
  WeightStore store("test weights", std::move(weights));
  return {config, std::make_unique<Transformer>(config, store)};
}

// The original model and its conversion, from the same weights.
struct Pair {
  Model original, converted;
};

Pair BuildPair(const ModelConfig& config, const Weights& weights) {
  Weights converted = weights;  // the conversion replaces entries, never edits a tensor
  const ModelConfig converted_config =
      ConvertNorm(config, converted, NormKind::kRMSNorm, "test weights");
  return {Build(config, weights), Build(converted_config, std::move(converted))};
}

// Every tensor rounded to `dtype` and back: what loading a file of that dtype gives.
Weights RoundTo(const Weights& weights, at::ScalarType dtype) {
  Weights out;
  for (const auto& [name, t] : weights) out[name] = t.to(dtype).to(at::kFloat);
  return out;
}

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Sequences of ordinary tokens (ids above the special ones), lengths in [min, max].
std::vector<Tokens> RandomSequences(std::mt19937_64& rng, int64_t count, int64_t min_length,
                                    int64_t max_length, int64_t vocab, const SpecialTokens& s) {
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

std::vector<Tokens> Slice(const std::vector<Tokens>& all, size_t begin, size_t count) {
  return {all.begin() + begin, all.begin() + std::min(all.size(), begin + count)};
}

EncoderOutput EncodeSources(const Model& m, const std::vector<Tokens>& sources) {
  if (!m.config.is_mt()) return {};
  std::vector<Tokens> closed = sources;
  for (Tokens& s : closed) s.push_back(m.config.special.eos);
  return m.transformer->Encode(PadBatch(closed, m.config.special.pad));
}

// Logits [B, T, V] of decoding </s> + target for each source (sources empty for an LM).
at::Tensor Logits(const Model& m, const std::vector<Tokens>& sources,
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

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// The largest logit difference over `batches` batches of 8 random sequences of 48 tokens.
double MaxLogitDiff(const Pair& p, std::mt19937_64& rng, int batches) {
  const ModelConfig& c = p.original.config;
  double worst = 0;
  for (int b = 0; b < batches; ++b) {
    std::vector<Tokens> sources;
    if (c.is_mt()) sources = RandomSequences(rng, 8, 1, 48, c.source_vocab_size, c.special);
    const auto targets = RandomSequences(rng, 8, 47, 47, c.target_vocab_size, c.special);
    worst = std::max(worst, MaxAbsDiff(Logits(p.original, sources, targets),
                                       Logits(p.converted, sources, targets)));
  }
  return worst;
}

// The largest difference of the per-token log-probabilities over kInputs scored targets.
double MaxScoreDiff(const Pair& p, std::mt19937_64& rng) {
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
at::Tensor GreedyContinuations(const Model& m, const std::vector<Tokens>& prompts, int steps) {
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
int64_t LmGreedyMismatches(const Pair& p, std::mt19937_64& rng) {
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

SearchComparison CompareMtSearch(const Pair& p, std::mt19937_64& rng) {
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
    const auto ga = GreedySearch(*p.original.transformer, ma, max_lengths);
    const auto gb = GreedySearch(*p.converted.transformer, mb, max_lengths);
    const BeamOptions beam{4, 2, 1.0};
    const auto ba = BeamSearch(*p.original.transformer, ma, max_lengths, beam);
    const auto bb = BeamSearch(*p.converted.transformer, mb, max_lengths, beam);
    for (size_t i = 0; i < chunk.size(); ++i) {
      if (!compare(ga[i], gb[i])) ++r.greedy_mismatches;
      bool same = ba[i].size() == bb[i].size();
      for (size_t k = 0; same && k < ba[i].size(); ++k) same = compare(ba[i][k], bb[i][k]);
      if (!same) ++r.beam_mismatches;
    }
  }
  return r;
}

void PrintFigure(const std::string& model, const std::string& what, double value) {
  std::cout << "[ figures  ] " << model << ": " << what << " = " << value << std::endl;
}

// The weights of one version directory, as the server loads them.
Weights LoadDirWeights(const std::string& dir) { return LoadWeights(dir + "/model.safetensors"); }

TEST(NormConversionTest, EnlmGivesTheSameLogitsGreedyOutputsAndScores) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(EnlmDir() + "/config.json");
  const Pair p = BuildPair(config, LoadDirWeights(EnlmDir()));
  EXPECT_EQ(p.converted.config.norm_label(), "rmsnorm");

  const double logits = MaxLogitDiff(p, rng, 4);
  PrintFigure("enlm fp32", "max |logit difference|", logits);
  EXPECT_LE(logits, kFp32Tolerance);
  const double scores = MaxScoreDiff(p, rng);
  PrintFigure("enlm fp32", "max |token log-prob difference| over 500 texts", scores);
  EXPECT_LE(scores, kFp32Tolerance);
  const int64_t greedy = LmGreedyMismatches(p, rng);
  PrintFigure("enlm fp32", "greedy continuations that differ, of 500", greedy);
  EXPECT_EQ(greedy, 0);
}

// fp16 weights: the original as an F16 file loads it, against the converted model of that
// file written back as F16 (what `normserve-model convert` writes for an F16 input): the
// recentred weights are rounded again, so their means are zero only to fp16 precision.
TEST(NormConversionTest, EnlmFromFp16WeightsStaysClose) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  c10::InferenceMode guard;
  testing::TempDir dir;
  const std::string original = dir.File("original");
  fs::create_directories(original);
  for (const char* file : {"config.json", "lm.spm"}) {
    fs::copy_file(EnlmDir() + "/" + file, original + "/" + file);
  }
  SaveWeights(original + "/model.safetensors", LoadDirWeights(EnlmDir()), safetensors::DType::kF16);
  ConvertModelDirectory(original, dir.File("converted"), NormKind::kRMSNorm);
  EXPECT_EQ(safetensors::File::Open(dir.File("converted") + "/model.safetensors")
                .tensors()
                .at("decoder.output_projection.weight")
                .dtype,
            safetensors::DType::kF16);

  const Pair p{Build(LoadModelConfig(original + "/config.json"), LoadDirWeights(original)),
               Build(LoadModelConfig(dir.File("converted") + "/config.json"),
                     LoadDirWeights(dir.File("converted")))};
  const double logits = MaxLogitDiff(p, rng, 4);
  PrintFigure("enlm fp16 weights", "max |logit difference|", logits);
  EXPECT_LE(logits, 5e-2);
  const double scores = MaxScoreDiff(p, rng);
  PrintFigure("enlm fp16 weights", "max |token log-prob difference| over 500 texts", scores);
  EXPECT_LE(scores, 5e-2);
}

// The load-time option (model.json's "convert_norm") serves the same scores under the
// rmsnorm label, and so does the directory `normserve-model convert --dtype f32` writes
// (enlm is stored as F16; the conversion at load runs on the fp32 copy).
TEST(NormConversionTest, ServedModelConvertsAtLoadAndFromDisk) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  ConvertModelDirectory(EnlmDir(), dir.File("1"), NormKind::kRMSNorm, safetensors::DType::kF32);
  const auto original = ServedModel::Load(EnlmDir(), "enlm", 1);
  const auto at_load = ServedModel::Load(EnlmDir(), "enlm", 1, "cpu", NormKind::kRMSNorm);
  const auto on_disk = ServedModel::Load(dir.File("1"), "enlm_rmsnorm", 1);
  EXPECT_EQ(original->norm_label(), "layernorm");
  EXPECT_EQ(at_load->norm_label(), "rmsnorm");
  EXPECT_EQ(on_disk->norm_label(), "rmsnorm");
  EXPECT_EQ(at_load->parameter_count(), on_disk->parameter_count());

  std::vector<std::string> texts;
  std::istringstream corpus(testing::GenerateCorpus(rng, static_cast<int>(kInputs)));
  for (std::string line; std::getline(corpus, line);) texts.push_back(line);
  const auto a = original->ScoreTexts(texts);
  double worst = 0;
  for (const auto& converted : {at_load, on_disk}) {
    const auto b = converted->ScoreTexts(texts);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i].tokens.size(), b[i].tokens.size());
      worst = std::max(worst, std::abs(a[i].total_logprob - b[i].total_logprob));
    }
  }
  PrintFigure("enlm served", "max |total log-prob difference| of Score over 500 texts", worst);
  EXPECT_LE(worst, kFp32Tolerance * 10);  // sums of up to 30 token log-probs

  GenerationOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 12;
  int64_t differ = 0;
  for (size_t i = 0; i < 50; ++i) {
    const auto prompt = original->PrepareGenerate(texts[i], greedy);
    const auto none = [](const std::string&) { return true; };
    differ += original->Generate(prompt, greedy, none).text !=
              at_load->Generate(prompt, greedy, none).text;
  }
  EXPECT_EQ(differ, 0) << "greedy generations that differ, of 50";
}

// transformer_mt written by InitModelDirectory, layernorm at every site.
struct MtSpec {
  std::string name;
  bool share_all_embeddings;
  bool tied_output;
};

std::string MtConfigJson(const MtSpec& s) {
  return json{{"architecture", "transformer_mt"},
              {"embed_dim", 64},
              {"ffn_dim", 128},
              {"attention_heads", 4},
              {"encoder_layers", 2},
              {"decoder_layers", 2},
              {"normalize_before", true},
              {"activation", "relu"},
              {"max_positions", 64},
              {"share_all_embeddings", s.share_all_embeddings},
              {"share_decoder_input_output_embed", s.tied_output},
              {"norm", {{"default", {{"type", "layernorm"}, {"eps", 1e-5}}}}}}
      .dump();
}

class MtConversionTest : public ::testing::TestWithParam<MtSpec> {};

TEST_P(MtConversionTest, GivesTheSameLogitsSearchOutputsAndScores) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  const MtSpec& spec = GetParam();
  testing::TempDir dir;
  const std::string text = dir.File("text.txt");
  testing::WriteTextFile(text, testing::GenerateCorpus(rng, 300));
  ModelInitOptions init;
  init.config_json = MtConfigJson(spec);
  init.out_dir = dir.File("mt");
  init.source_text = text;  // one text for both sides: share_all_embeddings needs one vocabulary
  init.target_text = text;
  init.vocab_size = 200;
  init.seed = seed;
  InitModelDirectory(init);

  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(init.out_dir + "/config.json");
  const Pair p = BuildPair(config, LoadDirWeights(init.out_dir));
  EXPECT_FALSE(p.converted.config.share_decoder_input_output_embed);
  EXPECT_EQ(p.converted.config.share_all_embeddings, spec.share_all_embeddings);

  const std::string name = "mt " + spec.name;
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
  EXPECT_EQ(search.beam_mismatches, 0);
  EXPECT_LE(search.max_score_diff, kFp32Tolerance);

  // fp16 weights: the original as an F16 file gives it, against its conversion stored as F16.
  const Weights half = RoundTo(LoadDirWeights(init.out_dir), at::kHalf);
  Weights half_converted = half;
  const ModelConfig converted_config =
      ConvertNorm(config, half_converted, NormKind::kRMSNorm, "fp16 weights");
  const Pair fp16_stored{Build(config, half),
                         Build(converted_config, RoundTo(half_converted, at::kHalf))};
  PrintFigure(name + " fp16 weights", "max |logit difference|", MaxLogitDiff(fp16_stored, rng, 4));
}

INSTANTIATE_TEST_SUITE_P(Embeddings, MtConversionTest,
                         ::testing::Values(MtSpec{"separate_tied", false, true},
                                           MtSpec{"separate_untied", false, false},
                                           MtSpec{"shared_all", true, true}),
                         [](const auto& info) { return info.param.name; });

// A config whose norms are `norm` (config.json's "norm" object) and whose placement is
// normalize_before.
ModelConfig LmConfig(const json& norm, bool normalize_before) {
  return ParseModelConfig(json{{"architecture", "transformer_lm"},
                               {"embed_dim", 16},
                               {"ffn_dim", 32},
                               {"attention_heads", 2},
                               {"decoder_layers", 1},
                               {"normalize_before", normalize_before},
                               {"vocab_size", 50},
                               {"tokenizer", {{"model", "lm.spm"}}},
                               {"norm", norm}}
                              .dump(),
                          "test config");
}

std::string RefusalOf(const ModelConfig& config) {
  Weights weights;  // never reached: the refusal comes first
  try {
    ConvertNorm(config, weights, NormKind::kRMSNorm, "model");
  } catch (const ModelLoadError& e) {
    return e.what();
  }
  ADD_FAILURE() << "converted a model that is not Pre-LN";
  return "";
}

TEST(NormConversionRefusalTest, PostNormIsRefused) {
  const std::string why = RefusalOf(LmConfig({{"default", {{"type", "layernorm"}}}}, false));
  EXPECT_NE(why.find("post-norm"), std::string::npos) << why;
  EXPECT_NE(why.find("only a Pre-LN model"), std::string::npos) << why;
}

TEST(NormConversionRefusalTest, PowerNormAndMixedNormsAreRefusedNamingTheSite) {
  const std::string powernorm = RefusalOf(LmConfig(
      {{"default", {{"type", "layernorm"}}}, {"decoder_ffn", {{"type", "powernorm"}}}}, true));
  EXPECT_NE(powernorm.find("'decoder_ffn' is powernorm"), std::string::npos) << powernorm;
  EXPECT_NE(powernorm.find("running statistics"), std::string::npos) << powernorm;
  const std::string batchnorm = RefusalOf(LmConfig({{"default", {{"type", "batchnorm"}}}}, true));
  EXPECT_NE(batchnorm.find("'decoder_self_attn' is batchnorm"), std::string::npos) << batchnorm;
  const std::string mixed = RefusalOf(
      LmConfig({{"default", {{"type", "layernorm"}}}, {"final", {{"type", "rmsnorm"}}}}, true));
  EXPECT_NE(mixed.find("'final' is rmsnorm"), std::string::npos) << mixed;
  EXPECT_NE(mixed.find("layernorm+rmsnorm"), std::string::npos) << mixed;
}

TEST(NormConversionRefusalTest, CrmsnormIsNotImplementedYet) {
  try {
    ParseNormConversionTarget("crmsnorm");
    ADD_FAILURE() << "crmsnorm accepted";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find("not implemented yet"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ParseNormConversionTarget("powernorm"), std::invalid_argument);
  EXPECT_EQ(ParseNormConversionTarget("rmsnorm"), NormKind::kRMSNorm);
}

}  // namespace
}  // namespace normserve
