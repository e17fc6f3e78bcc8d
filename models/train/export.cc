#include "models/train/export.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>

#include "models/io/weights_io.h"
#include "models/served_model.h"
#include "models/train/train_model.h"

namespace normserve::train {

void ExportModelDirectory(const std::string& dir, const ModelConfig& config,
                          const std::map<std::string, at::Tensor>& tensors,
                          safetensors::DType dtype) {
  std::filesystem::create_directories(dir);
  const std::string weights = dir + "/model.safetensors";
  SaveWeights(weights + ".tmp", tensors, dtype);
  std::filesystem::rename(weights + ".tmp", weights);
  const std::string config_path = dir + "/config.json";
  {
    std::ofstream out(config_path + ".tmp", std::ios::binary | std::ios::trunc);
    out << ModelConfigToJson(config);
    if (!out.flush()) throw std::runtime_error("cannot write " + config_path + ".tmp");
  }
  std::filesystem::rename(config_path + ".tmp", config_path);
}

double CompareWithServedModel(const std::string& dir, TrainTransformer& model, const Corpus& corpus,
                              int64_t sentences) {
  const auto served = ServedModel::Load(dir, "export-check", 1);
  const int64_t n = std::min<int64_t>(sentences, static_cast<int64_t>(corpus.size()));
  if (n == 0) return 0;
  std::vector<int64_t> indices(static_cast<size_t>(n));
  std::iota(indices.begin(), indices.end(), 0);
  const SpecialTokens& special = model.config().special;
  const Batch batch = Collate(corpus, indices, special);
  std::vector<std::vector<double>> mine;
  {
    at::NoGradGuard no_grad;
    mine = TargetLogProbs(model.Forward(batch, ForwardMode{}), batch, special.pad);
  }
  TokenBatch sources, targets;
  for (int64_t i : indices) {
    if (corpus.parallel()) sources.emplace_back(corpus.source[i].begin(), corpus.source[i].end());
    targets.emplace_back(corpus.target[i].begin(), corpus.target[i].end());
  }
  const std::vector<TextScore> theirs = served->ScoreTokens(sources, targets);
  double worst = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    if (theirs[i].tokens.size() != mine[i].size()) {
      throw std::runtime_error("the served model scored " +
                               std::to_string(theirs[i].tokens.size()) + " tokens of sentence " +
                               std::to_string(i) + ", the trainer " +
                               std::to_string(mine[i].size()));
    }
    for (size_t j = 0; j < mine[i].size(); ++j) {
      const double d = std::abs(mine[i][j] - theirs[i].tokens[j].logprob);
      worst = std::isnan(d) ? d : std::max(worst, d);
    }
  }
  return worst;
}

}  // namespace normserve::train
