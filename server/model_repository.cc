#include "server/model_repository.h"

#include <cmath>

#include "models/served_model.h"

namespace normserve {
namespace {

void RequireFinite(double value, const std::string& what) {
  if (!std::isfinite(value)) {
    throw ModelLoadError("warm-up: " + what + " gave " + std::to_string(value) +
                         "; the weights or the norm statistics are broken");
  }
}

void RequireFinite(const std::vector<std::vector<TranslationHypothesis>>& translations,
                   const std::string& what) {
  for (const auto& hypotheses : translations) {
    if (hypotheses.empty()) throw ModelLoadError("warm-up: " + what + " gave no hypothesis");
    for (const auto& h : hypotheses) RequireFinite(h.score, what + " score");
  }
}

void RequireFinite(const std::vector<TextScore>& scores, const std::string& what) {
  for (const TextScore& s : scores) {
    RequireFinite(s.total_logprob, what + " total_logprob");
    RequireFinite(s.perplexity, what + " perplexity");
    for (const TokenScore& t : s.tokens) RequireFinite(t.logprob, what + " token logprob");
  }
}

}  // namespace

template class ModelRepositoryT<ServedModel>;

std::shared_ptr<const ServedModel> LoadAndWarmUp(const std::string& dir, const std::string& name,
                                                 int64_t version, const std::string& device,
                                                 const ModelServingConfig& serving) {
  auto model = ServedModel::Load(dir, name, version, device, serving.convert_norm);
  const std::string text = "warm up";
  if (model->config().is_mt()) {
    TranslationOptions greedy;
    greedy.beam_size = 1;
    greedy.max_length_a = 0;
    greedy.max_length_b = 2;
    RequireFinite(model->Translate({text}, greedy), "greedy translation");
    TranslationOptions beam = greedy;
    beam.beam_size = 2;
    beam.n_best = 2;
    RequireFinite(model->Translate({text}, beam), "beam translation");
    RequireFinite(model->ScorePairs({{text, text}}), "pair scoring");
  } else {
    RequireFinite(model->ScoreTexts({text}), "text scoring");
    GenerationOptions options;
    options.temperature = 0;
    options.max_new_tokens = 3;
    model->Generate(model->PrepareGenerate(text, options), options,
                    [](const std::string&) { return true; });
  }
  return model;
}

}  // namespace normserve
