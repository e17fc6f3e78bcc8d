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
#include <tuple>
#include <vector>

#include "models/decoding/search.h"
#include "models/errors.h"
#include "models/io/model_init.h"
#include "models/io/safetensors.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/served_model.h"
#include "models/transformer/transformer.h"
#include "tests/unit/norm_equivalence.h"
#include "tests/unit/test_util.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Build;
using testing::BuildPair;
using testing::kFp32Tolerance;
using testing::kInputs;
using testing::LmGreedyMismatches;
using testing::LoadDirWeights;
using testing::MaxLogitDiff;
using testing::MaxScoreDiff;
using testing::Pair;
using testing::PrintFigure;
using testing::RoundTo;
using testing::Weights;

std::string EnlmDir() { return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/enlm/1"; }

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

// What the recentring is for: RMSNorm on the original weights, or the conversion with raw
// sinusoids or with the output tied to the recentred table, gives other logits, and the
// comparison above sees it.
TEST(NormConversionTest, EachRecentringStepIsNeeded) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(EnlmDir() + "/config.json");
  const Weights weights = LoadDirWeights(EnlmDir());
  Weights converted_weights = weights;
  const ModelConfig converted = ConvertNorm(config, converted_weights, NormKind::kRMSNorm, "enlm");

  ModelConfig norm_only = converted;
  norm_only.zero_mean_positions = false;
  norm_only.share_decoder_input_output_embed = true;
  ModelConfig raw_positions = converted;
  raw_positions.zero_mean_positions = false;
  ModelConfig tied = converted;
  tied.share_decoder_input_output_embed = true;
  Weights tied_weights = converted_weights;
  tied_weights.erase("decoder.output_projection.weight");

  const std::vector<std::tuple<std::string, ModelConfig, Weights>> broken = {
      {"the norm swapped alone", norm_only, weights},
      {"raw sinusoids", raw_positions, converted_weights},
      {"a recentred tied output", tied, tied_weights}};
  for (const auto& [what, broken_config, broken_weights] : broken) {
    const Pair p{Build(config, weights), Build(broken_config, broken_weights)};
    const double diff = MaxLogitDiff(p, rng, 1);
    PrintFigure("enlm with " + what, "max |logit difference|", diff);
    EXPECT_GT(diff, 10 * kFp32Tolerance) << what;
  }
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
  testing::ExpectEquivalentMt(p, rng, name);

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
