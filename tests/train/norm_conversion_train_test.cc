// A Pre-LN transformer_mt made by the trainer converts losslessly to Pre-RMSNorm and to
// Pre-CRMSNorm (models/io/norm_conversion.h): same logits, scores, greedy and beam outputs on
// 500 inputs.
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "models/train/trainer.h"
#include "tests/train/train_test_util.h"
#include "tests/unit/norm_equivalence.h"

namespace normserve::train {
namespace {

TEST(NormConversionTrainTest, TrainedPreLnMtConvertsLosslessly) {
  NORMSERVE_TEST_SEED(seed);
  testing::TempDir dir;
  const testing::TinyParallel data = testing::MakeTinyParallel(seed, 400);
  testing::WriteTextFile(dir.File("train.de"), data.source);
  testing::WriteTextFile(dir.File("train.en"), data.target);
  testing::WriteTextFile(dir.File("config.json"),
                         nlohmann::json{{"architecture", "transformer_mt"},
                                        {"embed_dim", 32},
                                        {"ffn_dim", 64},
                                        {"attention_heads", 2},
                                        {"encoder_layers", 1},
                                        {"decoder_layers", 1},
                                        {"normalize_before", true},
                                        {"max_positions", 32},
                                        {"share_decoder_input_output_embed", true},
                                        {"norm", {{"default", {{"type", "layernorm"}}}}}}
                             .dump());
  TrainerOptions o;
  o.config_path = dir.File("config.json");
  o.train_source = dir.File("train.de");
  o.train_target = dir.File("train.en");
  o.out_dir = dir.File("model");
  o.vocab_size = 60;
  o.max_tokens = 512;
  o.steps = 30;
  o.warmup = 10;
  o.save_every = 30;
  o.validate_every = 30;
  o.progress = false;
  o.seed = seed;
  Trainer(o).Run();

  c10::InferenceMode guard;
  const ModelConfig config = LoadModelConfig(o.out_dir + "/config.json");
  std::mt19937_64 rng(seed);
  for (NormKind target : normserve::testing::kTargets) {
    const std::string name = "trained mt " + normserve::testing::TargetName(target);
    SCOPED_TRACE(name);
    normserve::testing::ExpectEquivalentMt(
        normserve::testing::BuildPair(config, normserve::testing::LoadDirWeights(o.out_dir),
                                      target),
        rng, name);
  }
}

}  // namespace
}  // namespace normserve::train
