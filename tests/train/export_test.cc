// A model the trainer exports loads unchanged in the models library: the inference Transformer
// (fused kernels, folded BatchNorm/PowerNorm statistics) gives the logits of the trainer's own
// eval-mode forward, and ServedModel::Load (what normserved calls) scores the same
// log-probabilities, for MT and LM, pre- and post-norm, every norm variant, F32 and F16.
#include "models/train/export.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "models/io/model_config.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/text/tokenizer.h"
#include "models/train/data.h"
#include "models/train/train_model.h"
#include "models/transformer/transformer.h"
#include "tests/train/train_test_util.h"

namespace normserve::train {
namespace {

using nlohmann::json;
using testing::TempDir;

struct ExportCase {
  std::string name;
  json config;
};

json Norm(const std::string& type, json extra = json::object()) {
  extra["type"] = type;
  return extra;
}

std::vector<ExportCase> Cases() {
  std::vector<ExportCase> cases;
  json mixed = testing::TinyConfig(
      true,
      {{"default", Norm("layernorm")},
       {"encoder_self_attn", Norm("powernorm", {{"groups", 2}})},
       {"encoder_ffn", Norm("batchnorm")},
       {"decoder_self_attn", Norm("rmsnorm", {{"bias", false}})},
       {"decoder_cross_attn",
        Norm("prmsnorm", {{"p", 0.3}, {"k_rounding", "floor"}, {"eps_placement", "outside_sqrt"}})},
       {"decoder_ffn", Norm("powernorm", {{"groups", 4}})},
       {"final", Norm("batchnorm")}});
  mixed["encoder_layers"] = 2;
  mixed["decoder_layers"] = 2;
  cases.push_back({"mt_prenorm_mixed", mixed});
  json post = testing::TinyConfig(
      true, {{"default", Norm("batchnorm")}, {"decoder_ffn", Norm("powernorm", {{"groups", 2}})}});
  post["normalize_before"] = false;
  post["share_all_embeddings"] = true;
  post["share_decoder_input_output_embed"] = false;
  cases.push_back({"mt_postnorm_shared_batchnorm", post});
  json lm = testing::TinyConfig(false, {{"default", Norm("powernorm", {{"groups", 4}})}});
  lm["activation"] = "gelu";
  lm["decoder_layers"] = 2;
  cases.push_back({"lm_prenorm_powernorm", lm});
  json lm_post = testing::TinyConfig(false, {{"default", Norm("prmsnorm", {{"p", 0.25}})}});
  lm_post["normalize_before"] = false;
  cases.push_back({"lm_postnorm_prmsnorm", lm_post});
  return cases;
}

class ExportTest : public ::testing::TestWithParam<ExportCase> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const auto text = testing::MakeTinyParallel(7, 200);
    testing::WriteTextFile(dir_->File("text.txt"), text.source + text.target);
    TrainTokenizer({dir_->File("text.txt"), dir_->File("tok"), 60});
    tokenizer_ = Tokenizer::Load(dir_->File("tok.model")).release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }

  // The case's config with the suite's tokenizer (one file for both sides) in `model_dir`.
  static ModelConfig Prepare(json config, const std::string& model_dir) {
    std::filesystem::create_directories(model_dir);
    std::filesystem::copy_file(dir_->File("tok.model"), model_dir + "/tok.spm",
                               std::filesystem::copy_options::overwrite_existing);
    const int v = tokenizer_->vocab_size();
    if (config["architecture"] == "transformer_mt") {
      config["source_vocab_size"] = v;
      config["target_vocab_size"] = v;
      config["tokenizer"] = {{"source", "tok.spm"}, {"target", "tok.spm"}};
    } else {
      config["vocab_size"] = v;
      config["tokenizer"] = {{"model", "tok.spm"}};
    }
    return ParseModelConfig(config.dump(), "test config");
  }

  // Random sentences of random lengths (padding in every batch).
  static Corpus RandomCorpus(const ModelConfig& c, uint64_t seed, int n) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int32_t> id(4, static_cast<int32_t>(c.target_vocab_size) - 1);
    std::uniform_int_distribution<int> len(1, 12);
    Corpus corpus;
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> s(static_cast<size_t>(len(rng))), t(static_cast<size_t>(len(rng)));
      for (auto& x : s) x = id(rng);
      for (auto& x : t) x = id(rng);
      if (c.is_mt()) corpus.source.push_back(s);
      corpus.target.push_back(t);
      corpus.line.push_back(i);
    }
    return corpus;
  }

  // A few training-mode passes and random parameter moves, so that every running statistic
  // and parameter is away from its initial value.
  static void Perturb(TrainTransformer& model, const Corpus& corpus, uint64_t seed) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (int64_t it = 1; it <= 3; ++it) {
      const Batch b = Collate(corpus, {0, 1, 2, 3, 4, 5}, model.config().special);
      LabelSmoothedLoss(model.Forward(b, ForwardMode{true, it}, gen), b.target,
                        model.config().special.pad, 0.1)
          .loss.backward();
    }
    at::NoGradGuard no_grad;
    for (const auto& [name, p] : model.parameters()) {
      p.add_(at::randn(p.sizes(), gen) * 0.05);
      p.mutable_grad().reset();
    }
  }

  static TempDir* dir_;
  static Tokenizer* tokenizer_;
};

TempDir* ExportTest::dir_ = nullptr;
Tokenizer* ExportTest::tokenizer_ = nullptr;

TEST_P(ExportTest, InferenceTransformerGivesTheTrainersLogits) {
  NORMSERVE_TEST_SEED(seed);
  TempDir out;
  const ModelConfig config = Prepare(GetParam().config, out.path());
  TrainTransformer model(config, ModelTrainingOptions{}, seed);
  const Corpus corpus = RandomCorpus(config, seed, 8);
  Perturb(model, corpus, seed);

  const std::map<std::string, at::Tensor> exported = model.ExportTensors();
  for (const auto& [name, t] : exported) {
    EXPECT_EQ(name.find(".nu"), std::string::npos) << "a checkpoint-only buffer was exported";
  }
  ExportModelDirectory(out.path(), config, exported, safetensors::DType::kF32);

  std::vector<int64_t> all(corpus.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  const Batch batch = Collate(corpus, all, config.special);
  at::Tensor mine;
  {
    at::NoGradGuard no_grad;
    mine = model.Forward(batch, ForwardMode{});
  }

  const ModelConfig loaded_config = LoadModelConfig(out.path() + "/config.json");
  EXPECT_EQ(ModelConfigToJson(loaded_config), ModelConfigToJson(config));
  WeightStore store(out.path(), LoadWeights(out.path() + "/model.safetensors"));
  c10::InferenceMode guard;
  const Transformer served(loaded_config, store);  // every exported tensor claimed
  EncoderOutput memory;
  if (config.is_mt()) memory = served.Encode(batch.source);
  DecoderState state = served.StartDecoding(memory, batch.sentences);
  const at::Tensor theirs = served.Decode(batch.prev_output, state);
  ASSERT_EQ(theirs.sizes(), mine.sizes());
  const at::Tensor real = batch.target.ne(config.special.pad).unsqueeze(-1);
  const double diff = ((theirs - mine).abs() * real).max().item<double>();
  EXPECT_LT(diff, 1e-4) << "max |logit difference| over real positions";
  EXPECT_GT(mine.abs().max().item<double>(), 0.1);

  // ServedModel::Load, as normserved loads a version directory.
  EXPECT_LT(CompareWithServedModel(out.path(), model, corpus, 8), 1e-4);

  // The control: the served model does read the running statistics (and the check sees it).
  std::map<std::string, at::Tensor> moved = model.State();
  bool has_running = false;
  for (auto& [name, t] : moved) {
    if (name.find(".running_") != std::string::npos) {
      t = t * 1.5;
      has_running = true;
    }
  }
  if (has_running) {
    model.LoadState(moved);
    EXPECT_GT(CompareWithServedModel(out.path(), model, corpus, 8), 1e-3);
  }
}

TEST_P(ExportTest, Fp16ExportScoresLikeTheRoundedWeights) {
  NORMSERVE_TEST_SEED(seed);
  TempDir out;
  const ModelConfig config = Prepare(GetParam().config, out.path());
  TrainTransformer model(config, ModelTrainingOptions{}, seed);
  const Corpus corpus = RandomCorpus(config, seed, 6);
  Perturb(model, corpus, seed);
  ExportModelDirectory(out.path(), config, model.ExportTensors(), safetensors::DType::kF16);
  EXPECT_NE(testing::ReadTextFile(out.path() + "/model.safetensors").find("\"F16\""),
            std::string::npos);
  std::map<std::string, at::Tensor> rounded = model.State();
  for (auto& [name, t] : rounded) t = t.detach().to(at::kHalf).to(at::kFloat);
  model.LoadState(rounded);
  EXPECT_LT(CompareWithServedModel(out.path(), model, corpus, 6), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Configs, ExportTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace normserve::train
