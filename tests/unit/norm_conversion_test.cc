// The Pre-LN -> Pre-RMSNorm and Pre-CRMSNorm conversions (models/io/norm_conversion.h) are
// lossless: on the bundled enlm and on transformer_mt models written by InitModelDirectory
// (what `normserve-model init` runs), with tied, untied and shared embeddings, the converted
// model gives the same logits, the same greedy and beam outputs on 500 inputs and the same
// scores, in fp32 and from fp16 weights; Pre-CRMSNorm's weights have embed_dim - 1 channels
// where they touch the residual stream; models that are not Pre-LN are refused with the reason.
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
using testing::TargetName;
using testing::Weights;

std::string EnlmDir() { return std::string(NORMSERVE_SOURCE_DIR) + "/models/repository/enlm/1"; }

// Each test of a conversion runs for both targets.
class NormConversionTest : public ::testing::TestWithParam<NormKind> {};

INSTANTIATE_TEST_SUITE_P(Targets, NormConversionTest, ::testing::ValuesIn(testing::kTargets),
                         [](const auto& info) { return TargetName(info.param); });

TEST_P(NormConversionTest, EnlmGivesTheSameLogitsGreedyOutputsAndScores) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(EnlmDir() + "/config.json");
  const Pair p = BuildPair(config, LoadDirWeights(EnlmDir()), GetParam());
  EXPECT_EQ(p.converted.config.norm_label(), TargetName(GetParam()));

  const std::string name = "enlm " + TargetName(GetParam()) + " fp32";
  const double logits = MaxLogitDiff(p, rng, 4);
  PrintFigure(name, "max |logit difference|", logits);
  EXPECT_LE(logits, kFp32Tolerance);
  const double scores = MaxScoreDiff(p, rng);
  PrintFigure(name, "max |token log-prob difference| over 500 texts", scores);
  EXPECT_LE(scores, kFp32Tolerance);
  const int64_t greedy = LmGreedyMismatches(p, rng);
  PrintFigure(name, "greedy continuations that differ, of 500", greedy);
  EXPECT_EQ(greedy, 0);
}

// Pre-CRMSNorm's smaller hidden size, in the converted weights and config: d - 1 channels
// wherever the residual stream is read or written, d = heads * head_dim inside attention.
TEST(NormConversionTest, CrmsnormWeightsHaveTheSmallerHiddenSize) {
  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(EnlmDir() + "/config.json");
  Weights w = LoadDirWeights(EnlmDir());
  const ModelConfig c = ConvertNorm(config, w, NormKind::kCRMSNorm, "enlm");
  const int64_t d = config.embed_dim, r = d - 1, v = config.target_vocab_size;
  EXPECT_EQ(c.residual_dim, r);
  EXPECT_EQ(c.stream_dim(), r);
  EXPECT_TRUE(c.output_bias);
  const auto shape = [&w](const std::string& name) { return w.at(name).sizes().vec(); };
  using Shape = std::vector<int64_t>;
  EXPECT_EQ(shape("decoder.embed_tokens.weight"), (Shape{v, r}));
  EXPECT_EQ(shape("decoder.output_projection.weight"), (Shape{v, r}));
  EXPECT_EQ(shape("decoder.output_projection.bias"), (Shape{v}));
  EXPECT_EQ(shape("decoder.layers.0.self_attn.q_proj.weight"), (Shape{d, r}));
  EXPECT_EQ(shape("decoder.layers.0.self_attn.out_proj.weight"), (Shape{r, d}));
  EXPECT_EQ(shape("decoder.layers.0.self_attn.out_proj.bias"), (Shape{r}));
  EXPECT_EQ(shape("decoder.layers.0.fc1.weight"), (Shape{config.ffn_dim, r}));
  EXPECT_EQ(shape("decoder.layers.0.fc2.weight"), (Shape{r, config.ffn_dim}));
  EXPECT_EQ(shape("decoder.layers.0.self_attn_layer_norm.weight"), (Shape{r}));
  EXPECT_EQ(w.count("decoder.layers.0.self_attn_layer_norm.bias"), 0u);
  EXPECT_EQ(shape("decoder.layer_norm.weight"), (Shape{r}));
  // config.json says so, and a model of the original width is refused with the reason.
  const ModelConfig parsed = ParseModelConfig(ModelConfigToJson(c), "converted");
  EXPECT_EQ(parsed.residual_dim, r);
  EXPECT_EQ(parsed.norm_label(), "crmsnorm");
  try {
    Build(c, LoadDirWeights(EnlmDir()));
    ADD_FAILURE() << "built a Pre-CRMSNorm model from full-width weights";
  } catch (const ModelLoadError& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(r)), std::string::npos) << e.what();
  }
}

// What the recentring is for: RMSNorm on the original weights, or the conversion with raw
// sinusoids or with the output tied to the recentred table, gives other logits, and the
// comparison above sees it; so do a Pre-CRMSNorm model without its output bias, and one
// whose norms leave out the implied channel (RMSNorm over d - 1 channels).
TEST(NormConversionTest, EachRecentringStepIsNeeded) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(EnlmDir() + "/config.json");
  const Weights weights = LoadDirWeights(EnlmDir());
  Weights converted_weights = weights;
  const ModelConfig converted = ConvertNorm(config, converted_weights, NormKind::kRMSNorm, "enlm");

  ModelConfig norm_only = converted;
  norm_only.positions = PositionEncoding::kSinusoidal;
  norm_only.share_decoder_input_output_embed = true;
  ModelConfig raw_positions = converted;
  raw_positions.positions = PositionEncoding::kSinusoidal;
  ModelConfig tied = converted;
  tied.share_decoder_input_output_embed = true;
  Weights tied_weights = converted_weights;
  tied_weights.erase("decoder.output_projection.weight");

  Weights crms_weights = weights;
  const ModelConfig crms = ConvertNorm(config, crms_weights, NormKind::kCRMSNorm, "enlm");
  ModelConfig no_output_bias = crms;
  no_output_bias.output_bias = false;
  Weights no_output_bias_weights = crms_weights;
  no_output_bias_weights.erase("decoder.output_projection.bias");
  ModelConfig implied_channel_left_out = crms;
  for (auto& [site, norm] : implied_channel_left_out.norms) norm.kind = NormKind::kRMSNorm;

  const std::vector<std::tuple<std::string, ModelConfig, Weights>> broken = {
      {"the norm swapped alone", norm_only, weights},
      {"raw sinusoids", raw_positions, converted_weights},
      {"a recentred tied output", tied, tied_weights},
      {"crmsnorm without the output bias", no_output_bias, no_output_bias_weights},
      {"crmsnorm without the implied channel", implied_channel_left_out, crms_weights}};
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
TEST_P(NormConversionTest, EnlmFromFp16WeightsStaysClose) {
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
  ConvertModelDirectory(original, dir.File("converted"), GetParam());
  EXPECT_EQ(safetensors::File::Open(dir.File("converted") + "/model.safetensors")
                .tensors()
                .at("decoder.output_projection.weight")
                .dtype,
            safetensors::DType::kF16);

  const Pair p{Build(LoadModelConfig(original + "/config.json"), LoadDirWeights(original)),
               Build(LoadModelConfig(dir.File("converted") + "/config.json"),
                     LoadDirWeights(dir.File("converted")))};
  const std::string name = "enlm " + TargetName(GetParam()) + " fp16 weights";
  const double logits = MaxLogitDiff(p, rng, 4);
  PrintFigure(name, "max |logit difference|", logits);
  EXPECT_LE(logits, 5e-2);
  const double scores = MaxScoreDiff(p, rng);
  PrintFigure(name, "max |token log-prob difference| over 500 texts", scores);
  EXPECT_LE(scores, 5e-2);
}

// The load-time option (model.json's "convert_norm") serves the same scores under the
// target's label, and so does the directory `normserve-model convert --dtype f32` writes
// (enlm is stored as F16; the conversion at load runs on the fp32 copy).
TEST_P(NormConversionTest, ServedModelConvertsAtLoadAndFromDisk) {
  NORMSERVE_TEST_SEED(seed);
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  const std::string target = TargetName(GetParam());
  ConvertModelDirectory(EnlmDir(), dir.File("1"), GetParam(), safetensors::DType::kF32);
  const auto original = ServedModel::Load(EnlmDir(), "enlm", 1);
  const auto at_load = ServedModel::Load(EnlmDir(), "enlm", 1, "cpu", GetParam());
  const auto on_disk = ServedModel::Load(dir.File("1"), "enlm_" + target, 1);
  EXPECT_EQ(original->norm_label(), "layernorm");
  EXPECT_EQ(at_load->norm_label(), target);
  EXPECT_EQ(on_disk->norm_label(), target);
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
  PrintFigure("enlm " + target + " served",
              "max |total log-prob difference| of Score over 500 texts", worst);
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
  NormKind target;
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
  const Pair p = BuildPair(config, LoadDirWeights(init.out_dir), spec.target);
  EXPECT_FALSE(p.converted.config.share_decoder_input_output_embed);
  EXPECT_EQ(p.converted.config.share_all_embeddings, spec.share_all_embeddings);
  EXPECT_EQ(p.converted.config.stream_dim(),
            spec.target == NormKind::kCRMSNorm ? config.embed_dim - 1 : config.embed_dim);

  const std::string name = "mt " + spec.name;
  testing::ExpectEquivalentMt(p, rng, name);

  // fp16 weights: the original as an F16 file gives it, against its conversion stored as F16.
  const Weights half = RoundTo(LoadDirWeights(init.out_dir), at::kHalf);
  Weights half_converted = half;
  const ModelConfig converted_config =
      ConvertNorm(config, half_converted, spec.target, "fp16 weights");
  const Pair fp16_stored{Build(config, half),
                         Build(converted_config, RoundTo(half_converted, at::kHalf))};
  PrintFigure(name + " fp16 weights", "max |logit difference|", MaxLogitDiff(fp16_stored, rng, 4));
}

std::vector<MtSpec> MtSpecs() {
  std::vector<MtSpec> specs;
  for (NormKind target : testing::kTargets) {
    const std::string suffix = "_" + TargetName(target);
    specs.push_back({"separate_tied" + suffix, false, true, target});
    specs.push_back({"separate_untied" + suffix, false, false, target});
    specs.push_back({"shared_all" + suffix, true, true, target});
  }
  return specs;
}

INSTANTIATE_TEST_SUITE_P(Embeddings, MtConversionTest, ::testing::ValuesIn(MtSpecs()),
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

std::string RefusalOf(const ModelConfig& config, NormKind target = NormKind::kRMSNorm) {
  Weights weights;  // never reached: the refusal comes first
  try {
    ConvertNorm(config, weights, target, "model");
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
  const std::string crms =
      RefusalOf(LmConfig({{"default", {{"type", "layernorm"}}}}, false), NormKind::kCRMSNorm);
  EXPECT_NE(crms.find("cannot convert to crmsnorm: the model is post-norm"), std::string::npos)
      << crms;
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

TEST(NormConversionRefusalTest, TargetsAreRmsnormAndCrmsnorm) {
  EXPECT_EQ(ParseNormConversionTarget("rmsnorm"), NormKind::kRMSNorm);
  EXPECT_EQ(ParseNormConversionTarget("crmsnorm"), NormKind::kCRMSNorm);
  try {
    ParseNormConversionTarget("powernorm");
    ADD_FAILURE() << "powernorm accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("use rmsnorm or crmsnorm"), std::string::npos) << e.what();
  }
  const std::string layernorm =
      RefusalOf(LmConfig({{"default", {{"type", "layernorm"}}}}, true), NormKind::kLayerNorm);
  EXPECT_NE(layernorm.find("only rmsnorm and crmsnorm are lossless targets"), std::string::npos)
      << layernorm;
}

}  // namespace
}  // namespace normserve
