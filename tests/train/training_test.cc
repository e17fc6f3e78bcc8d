// The trainer end to end on tiny data: the loss falls under a stated threshold within a stated
// number of updates (seconds on 2 cores), for MT and for an LM with every norm variant; a run
// resumed from a checkpoint ends bit-identical to an uninterrupted one; a run started from
// another run's checkpoint (--init-from); checkpoint averaging; and the pieces: batching,
// epoch order, the schedule, clipping, the label-smoothed loss.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "models/io/weights_io.h"
#include "models/served_model.h"
#include "models/train/checkpoint.h"
#include "models/train/data.h"
#include "models/train/optim.h"
#include "models/train/train_model.h"
#include "models/train/trainer.h"
#include "tests/train/train_test_util.h"

namespace normserve::train {
namespace {

using nlohmann::json;
using testing::TempDir;

// Files of a tiny MT task (and an LM on its English side) in `dir`.
void WriteTinyData(const TempDir& dir, uint64_t seed) {
  const auto train = testing::MakeTinyParallel(seed, 300);
  const auto valid = testing::MakeTinyParallel(seed + 1, 40);
  testing::WriteTextFile(dir.File("train.de"), train.source);
  testing::WriteTextFile(dir.File("train.en"), train.target);
  testing::WriteTextFile(dir.File("valid.de"), valid.source);
  testing::WriteTextFile(dir.File("valid.en"), valid.target);
  testing::WriteTextFile(dir.File("train.txt"), testing::MakeTinyCyclicText(seed + 2, 300));
  testing::WriteTextFile(dir.File("valid.txt"), testing::MakeTinyCyclicText(seed + 3, 40));
}

TrainerOptions TinyOptions(const TempDir& dir, const json& config, const std::string& out) {
  testing::WriteTextFile(dir.File(out + ".json"), config.dump());
  TrainerOptions o;
  o.config_path = dir.File(out + ".json");
  if (config["architecture"] == "transformer_mt") {
    o.train_source = dir.File("train.de");
    o.train_target = dir.File("train.en");
    o.valid_source = dir.File("valid.de");
    o.valid_target = dir.File("valid.en");
  } else {
    o.train_text = dir.File("train.txt");
    o.valid_text = dir.File("valid.txt");
  }
  o.out_dir = dir.File(out);
  o.vocab_size = 64;  // whole words
  o.max_tokens = 256;
  o.lr = 5e-3;
  o.warmup = 30;
  o.dropout = 0.0;
  o.label_smoothing = 0.0;
  o.validate_every = 0;
  o.save_every = 0;
  o.log_every = 50;
  o.threads = 1;  // tiny tensors: a second thread costs more than it gives
  o.seed = 3;
  o.progress = false;
  return o;
}

json LayerNorm() { return {{"default", {{"type", "layernorm"}}}}; }

// The stated bar: the word-for-word task's training NLL falls from ~3 nats (uniform over
// ~20 words) to under 0.3 nats per token within 300 updates (about 5 s on 2 shared cores).
TEST(TinyTrainingTest, MtLossFallsUnderThresholdWithin300Updates) {
  TempDir dir;
  WriteTinyData(dir, 11);
  TrainerOptions o = TinyOptions(dir, testing::TinyConfig(true, LayerNorm()), "mt");
  o.steps = 300;
  o.score_out = dir.File("scores.jsonl");
  const auto start = std::chrono::steady_clock::now();
  const TrainSummary s = Trainer(o).Run();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "tiny MT: " << s.steps << " updates in " << seconds << " s, train nll "
            << s.train_nll << ", valid nll " << s.valid_nll << ", " << s.tokens_per_second
            << " tok/s\n";
  EXPECT_EQ(s.steps, 300);
  EXPECT_LT(s.train_nll, 0.3);
  EXPECT_LT(s.valid_nll, 0.6);
  EXPECT_LT(s.export_max_logprob_diff, 1e-4);
  // A complete model directory, loadable as the server loads it.
  for (const char* f :
       {"config.json", "model.safetensors", "source.spm", "target.spm", "train.log"}) {
    EXPECT_TRUE(std::filesystem::exists(o.out_dir + "/" + f)) << f;
  }
  const auto served = ServedModel::Load(o.out_dir, "tiny", 1);
  const auto translation = served->Translate({"das Haus ist klein"}, TranslationOptions{});
  EXPECT_EQ(translation[0][0].text, "the house is small");
  EXPECT_NE(testing::ReadTextFile(o.score_out).find("\"logprobs\""), std::string::npos);
}

class NormVariantTrainingTest : public ::testing::TestWithParam<std::string> {};

// Every variant learns the cyclic LM (train_test_util.h): NLL per token from ~4 nats to under
// 1.0 within 200 updates (the best is 0.46), with dropout and label smoothing on.
TEST_P(NormVariantTrainingTest, LmLossFalls) {
  TempDir dir;
  WriteTinyData(dir, 12);
  json norm = {{"default", {{"type", GetParam()}}}};
  if (GetParam() == "powernorm") norm["default"]["groups"] = 2;
  if (GetParam() == "prmsnorm") norm["default"]["p"] = 0.25;  // 8 of 32 channels
  TrainerOptions o = TinyOptions(dir, testing::TinyConfig(false, norm), "lm");
  o.steps = 200;
  o.dropout = 0.1;
  o.label_smoothing = 0.1;
  const TrainSummary s = Trainer(o).Run();
  std::cout << GetParam() << ": train nll " << s.train_nll << ", valid nll " << s.valid_nll << "\n";
  EXPECT_LT(s.train_nll, 1.0);
  EXPECT_LT(s.valid_nll, 1.0);
  EXPECT_LT(s.export_max_logprob_diff, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Variants, NormVariantTrainingTest,
                         ::testing::Values("layernorm", "rmsnorm", "prmsnorm", "batchnorm",
                                           "powernorm"));

// Stopping at a checkpoint and resuming gives bit-identical parameters, running statistics,
// PowerNorm's nu and Adam moments, with dropout on.
TEST(ResumeTest, ResumedRunEqualsUninterruptedRun) {
  TempDir dir;
  WriteTinyData(dir, 13);
  const json config =
      testing::TinyConfig(true, {{"default", {{"type", "layernorm"}}},
                                 {"encoder_self_attn", {{"type", "powernorm"}, {"groups", 2}}},
                                 {"decoder_ffn", {{"type", "batchnorm"}}}});
  TrainerOptions a = TinyOptions(dir, config, "a");
  a.steps = 12;
  a.save_every = 6;
  a.dropout = 0.2;
  a.warmup = 4;         // PowerNorm switches to its running phi on the way
  a.max_tokens = 1024;  // three batches an epoch: the run crosses epochs
  a.validate_every = 5;
  Trainer(a).Run();

  TrainerOptions b = a;
  b.out_dir = dir.File("b");
  b.checkpoint_dir.clear();
  b.log_file.clear();
  b.resume = CheckpointPath(dir.File("a/checkpoints"), 6);
  b.source_spm = dir.File("a/source.spm");
  b.target_spm = dir.File("a/target.spm");
  const TrainSummary sb = Trainer(b).Run();
  EXPECT_EQ(sb.steps, 12);

  const Checkpoint ca = LoadCheckpoint(CheckpointPath(dir.File("a/checkpoints"), 12));
  const Checkpoint cb = LoadCheckpoint(CheckpointPath(dir.File("b/checkpoints"), 12));
  ASSERT_EQ(ca.model.size(), cb.model.size());
  bool saw_nu = false;
  for (const auto& [name, t] : ca.model) {
    saw_nu = saw_nu || name.find(".nu") != std::string::npos;
    ASSERT_TRUE(cb.model.count(name)) << name;
    EXPECT_TRUE(at::equal(t, cb.model.at(name))) << name;
  }
  EXPECT_TRUE(saw_nu);
  for (const auto& [name, t] : ca.optimizer)
    EXPECT_TRUE(at::equal(t, cb.optimizer.at(name))) << name;
  EXPECT_EQ(json::parse(ca.state_json)["position"], json::parse(cb.state_json)["position"]);
  EXPECT_EQ(json::parse(ca.state_json)["epoch"], json::parse(cb.state_json)["epoch"]);
  EXPECT_GT(json::parse(ca.state_json)["epoch"].get<int>(), 1);
}

TEST(ResumeTest, AnotherConfigIsRefused) {
  TempDir dir;
  WriteTinyData(dir, 14);
  TrainerOptions a = TinyOptions(dir, testing::TinyConfig(true, LayerNorm()), "a");
  a.steps = 2;
  Trainer(a).Run();
  TrainerOptions b =
      TinyOptions(dir, testing::TinyConfig(true, {{"default", {{"type", "rmsnorm"}}}}), "a");
  b.resume = "last";
  b.steps = 4;
  EXPECT_THROW(Trainer(b).Run(), std::invalid_argument);
}

// --init-from takes the weights (norm statistics included) and nothing else: the new run
// counts its own steps, and an update at a negligible learning rate leaves the weights as
// they were in the checkpoint, not as a fresh initialization would have them.
TEST(InitFromTest, StartsFromTheCheckpointWeightsWithAFreshSchedule) {
  TempDir dir;
  WriteTinyData(dir, 16);
  const json config = testing::TinyConfig(
      true, {{"default", {{"type", "layernorm"}}}, {"decoder_ffn", {{"type", "batchnorm"}}}});
  TrainerOptions a = TinyOptions(dir, config, "a");
  a.steps = 20;
  a.save_every = 20;
  Trainer(a).Run();
  const std::string base = CheckpointPath(dir.File("a/checkpoints"), 20);

  TrainerOptions b = TinyOptions(dir, config, "b");
  b.init_from = base;
  b.source_spm = dir.File("a/source.spm");
  b.target_spm = dir.File("a/target.spm");
  b.seed = 9;  // another initialization and data order than a's
  b.steps = 1;
  b.save_every = 1;
  b.warmup = 0;
  b.lr = 1e-12;
  EXPECT_EQ(Trainer(b).Run().steps, 1);

  const Checkpoint ca = LoadCheckpoint(base);
  const Checkpoint cb = LoadCheckpoint(CheckpointPath(dir.File("b/checkpoints"), 1));
  EXPECT_EQ(json::parse(cb.state_json)["adam_steps"], 1);
  bool saw_running_stats = false;
  for (const auto& [name, t] : ca.model) {
    saw_running_stats = saw_running_stats || name.find("running") != std::string::npos;
    ASSERT_TRUE(cb.model.count(name)) << name;
    if (name.find("running") != std::string::npos) continue;  // updated by b's forward pass
    EXPECT_TRUE(at::allclose(t, cb.model.at(name), 0, 1e-6)) << name;
  }
  EXPECT_TRUE(saw_running_stats);
}

TEST(InitFromTest, AnotherConfigIsRefused) {
  TempDir dir;
  WriteTinyData(dir, 17);
  TrainerOptions a = TinyOptions(dir, testing::TinyConfig(true, LayerNorm()), "a");
  a.steps = 2;
  a.save_every = 2;
  Trainer(a).Run();
  TrainerOptions b =
      TinyOptions(dir, testing::TinyConfig(true, {{"default", {{"type", "rmsnorm"}}}}), "b");
  b.init_from = CheckpointPath(dir.File("a/checkpoints"), 2);
  b.source_spm = dir.File("a/source.spm");
  b.target_spm = dir.File("a/target.spm");
  b.steps = 2;
  EXPECT_THROW(Trainer(b).Run(), std::invalid_argument);
}

TEST(CheckpointTest, AveragingTakesTheMeanAndExportsIt) {
  TempDir dir;
  WriteTinyData(dir, 15);
  TrainerOptions o = TinyOptions(dir, testing::TinyConfig(false, LayerNorm()), "lm");
  o.steps = 9;
  o.save_every = 3;
  o.average_last = 2;
  o.keep_last = 2;
  o.fp16 = true;
  const TrainSummary s = Trainer(o).Run();
  EXPECT_LT(s.export_max_logprob_diff, 1e-4);
  const auto saved = ListCheckpoints(o.out_dir + "/checkpoints");
  ASSERT_EQ(saved.size(), 2u);  // keep_last pruned checkpoint_3
  EXPECT_EQ(saved[0].first, 6);
  EXPECT_EQ(saved[1].first, 9);
  const auto mean = AverageCheckpoints({saved[0].second, saved[1].second});
  const Checkpoint c6 = LoadCheckpoint(saved[0].second), c9 = LoadCheckpoint(saved[1].second);
  for (const auto& [name, t] : mean) {
    EXPECT_TRUE(at::allclose(t, (c6.model.at(name) + c9.model.at(name)) / 2, 1e-6, 1e-7)) << name;
  }
  const auto weights = LoadWeights(o.out_dir + "/model.safetensors");
  const at::Tensor w = weights.at("decoder.layers.0.fc1.weight");
  EXPECT_TRUE(at::allclose(w, mean.at("decoder.layers.0.fc1.weight").to(at::kHalf).to(at::kFloat)));
}

TEST(BatchingTest, BatchesRespectTheTokenBudgetAndCoverEverySentenceOnce) {
  NORMSERVE_TEST_SEED(seed);
  Corpus c;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(1, 30);
  for (int i = 0; i < 500; ++i) {
    c.source.emplace_back(static_cast<size_t>(len(rng)), 5);
    c.target.emplace_back(static_cast<size_t>(len(rng)), 6);
    c.line.push_back(i);
  }
  const auto batches = MakeBatches(c, 200, seed);
  std::multiset<int64_t> seen;
  for (const auto& b : batches) {
    size_t longest = 0;
    for (int64_t i : b) {
      seen.insert(i);
      longest = std::max({longest, c.source[i].size() + 1, c.target[i].size() + 1});
    }
    EXPECT_LE(longest * b.size(), 200u);
  }
  EXPECT_EQ(seen.size(), 500u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 500u);
  EXPECT_EQ(MakeBatches(c, 200, seed), batches);  // deterministic

  const auto e1 = EpochOrder(static_cast<int64_t>(batches.size()), seed, 1);
  const auto e2 = EpochOrder(static_cast<int64_t>(batches.size()), seed, 2);
  EXPECT_NE(e1, e2);
  EXPECT_EQ(e1, EpochOrder(static_cast<int64_t>(batches.size()), seed, 1));
  EXPECT_EQ(std::set<int64_t>(e1.begin(), e1.end()).size(), batches.size());

  const Batch b = Collate(c, {0, 1}, SpecialTokens{});
  EXPECT_EQ(b.source.size(1),
            static_cast<int64_t>(std::max(c.source[0].size(), c.source[1].size()) + 1));
  EXPECT_EQ(b.prev_output[0][0].item<int64_t>(), 2);  // </s> first
  EXPECT_EQ(b.target[0][static_cast<int64_t>(c.target[0].size())].item<int64_t>(), 2);
  EXPECT_EQ(b.target_tokens, static_cast<int64_t>(c.target[0].size() + c.target[1].size() + 2));
}

TEST(ScheduleTest, InverseSqrtWarmupAndDecay) {
  EXPECT_NEAR(InverseSqrtLearningRate(1, 1e-3, 100, 0), 1e-5, 1e-15);
  EXPECT_NEAR(InverseSqrtLearningRate(50, 1e-3, 100, 0), 5e-4, 1e-15);
  EXPECT_NEAR(InverseSqrtLearningRate(100, 1e-3, 100, 0), 1e-3, 1e-15);
  EXPECT_NEAR(InverseSqrtLearningRate(400, 1e-3, 100, 0), 5e-4, 1e-15);
  EXPECT_NEAR(InverseSqrtLearningRate(10, 1e-3, 0, 0), 1e-3 / std::sqrt(10.0), 1e-15);
}

TEST(OptimizerTest, ClippingAndAdamStep) {
  at::Tensor p = at::zeros({2}).requires_grad_(true);
  (p * at::tensor({3.0f, 4.0f})).sum().backward();
  const std::vector<std::pair<std::string, at::Tensor>> params = {{"p", p}};
  EXPECT_NEAR(ClipGradNorm(params, 1.0), 5.0, 1e-6);
  EXPECT_TRUE(at::allclose(p.grad(), at::tensor({0.6f, 0.8f}), 1e-5));
  Adam adam(params, AdamOptions{});
  adam.Step(0.1);
  // The first Adam step moves every coordinate by lr against its gradient's sign.
  EXPECT_TRUE(at::allclose(p.detach(), at::tensor({-0.1f, -0.1f}), 1e-4));
  EXPECT_EQ(adam.steps(), 1);
  adam.ZeroGrad();
  EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
}

TEST(LossTest, LabelSmoothingFollowsFairseq) {
  NORMSERVE_TEST_SEED(seed);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor logits = at::randn({1, 3, 5}, gen, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor target = at::tensor({4L, 2L, 1L}).view({1, 3});  // the last is padding
  const double eps = 0.1;
  const LossSums s = LabelSmoothedLoss(logits, target, /*pad=*/1, eps);
  const at::Tensor lp = at::log_softmax(logits, -1)[0];
  double nll = 0, smooth = 0;
  for (int64_t t = 0; t < 2; ++t) {
    nll -= lp[t][target[0][t].item<int64_t>()].item<double>();
    smooth -= lp[t].sum().item<double>();
  }
  EXPECT_NEAR(s.nll.item<double>(), nll, 1e-12);
  const double eps_i = eps / 4;
  EXPECT_NEAR(s.loss.item<double>(), (1 - eps - eps_i) * nll + eps_i * smooth, 1e-12);
}

}  // namespace
}  // namespace normserve::train
