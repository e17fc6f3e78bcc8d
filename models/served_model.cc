#include "models/served_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "models/decoding/search.h"
#include "models/errors.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/text/tokenizer.h"
#include "models/text/utf8.h"
#include "models/transformer/transformer.h"

namespace normserve {
namespace {

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& dir, const std::string& file,
                                         int64_t vocab_size, const std::string& which) {
  auto tokenizer = Tokenizer::Load(dir + "/" + file);
  if (tokenizer->vocab_size() != vocab_size) {
    throw ModelLoadError(dir + "/" + file + ": the " + which + " tokenizer has " +
                         std::to_string(tokenizer->vocab_size()) +
                         " pieces but config.json says " + std::to_string(vocab_size));
  }
  return tokenizer;
}

void CheckBatch(size_t size, const char* what) {
  if (size == 0) throw InvalidInputError(std::string(what) + " is empty: send at least one");
  if (size > ServedModel::kMaxBatchTexts) {
    throw InvalidInputError(std::string(what) + " holds " + std::to_string(size) +
                            " entries; one request takes at most " +
                            std::to_string(ServedModel::kMaxBatchTexts));
  }
}

}  // namespace

struct ServedModel::Runtime {
  std::unique_ptr<Tokenizer> source_tokenizer;  // transformer_mt only
  std::unique_ptr<Tokenizer> target_tokenizer;
  std::unique_ptr<Transformer> transformer;

  // Tokenizes text `index` of a request and checks it against the model's limits.
  std::vector<int64_t> Tokenize(const Tokenizer& tokenizer, const std::string& text,
                                const std::string& what, int64_t max_positions) const {
    if (text.empty()) throw InvalidInputError(what + " is empty");
    size_t bad = 0;
    if (!IsValidUtf8(text, &bad)) {
      throw InvalidInputError(what + " is not valid UTF-8 (bad byte at offset " +
                              std::to_string(bad) + ")");
    }
    const std::vector<int> ids = tokenizer.Encode(text);
    const auto limit = max_positions - 1;  // room for </s>
    if (static_cast<int64_t>(ids.size()) > limit) {
      throw InvalidInputError(what + " is " + std::to_string(ids.size()) +
                              " tokens long; this model takes at most " + std::to_string(limit) +
                              " (max_positions " + std::to_string(max_positions) +
                              " includes </s>)");
    }
    return {ids.begin(), ids.end()};
  }

  TextScore MakeScore(const std::vector<int64_t>& target, const std::vector<double>& logprobs) const {
    TextScore s;
    for (size_t i = 0; i < logprobs.size(); ++i) {
      const int64_t id = i < target.size() ? target[i] : transformer->config().special.eos;
      s.tokens.push_back({target_tokenizer->Piece(static_cast<int>(id)), logprobs[i]});
      s.total_logprob += logprobs[i];
    }
    s.perplexity = std::exp(-s.total_logprob / static_cast<double>(logprobs.size()));
    return s;
  }
};

ServedModel::ServedModel(std::string name, int64_t version, std::string dir, ModelConfig config)
    : name_(std::move(name)),
      version_(version),
      dir_(std::move(dir)),
      config_(std::move(config)),
      norm_label_(config_.norm_label()),
      runtime_(std::make_unique<Runtime>()) {}

ServedModel::~ServedModel() = default;

std::shared_ptr<const ServedModel> ServedModel::Load(const std::string& dir, std::string name,
                                                     int64_t version) {
  ModelConfig config = LoadModelConfig(dir + "/config.json");
  std::shared_ptr<ServedModel> model(
      new ServedModel(std::move(name), version, dir, std::move(config)));
  const ModelConfig& c = model->config_;
  Runtime& rt = *model->runtime_;
  if (c.is_mt()) {
    rt.source_tokenizer = LoadTokenizer(dir, c.source_tokenizer, c.source_vocab_size, "source");
  }
  rt.target_tokenizer = LoadTokenizer(dir, c.target_tokenizer, c.target_vocab_size,
                                      c.is_mt() ? "target" : "LM");
  const std::string weights_path = dir + "/model.safetensors";
  c10::InferenceMode guard;
  WeightStore store(weights_path, LoadWeights(weights_path));
  rt.transformer = std::make_unique<Transformer>(c, store);
  return model;
}

int64_t ServedModel::parameter_count() const { return runtime_->transformer->parameter_count(); }

std::vector<std::vector<TranslationHypothesis>> ServedModel::Translate(
    const std::vector<std::string>& texts, const TranslationOptions& options) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ + "' is a transformer_lm; Translate needs a "
                            "transformer_mt model (use Score for language models)");
  }
  CheckBatch(texts.size(), "texts");
  ValidateTranslationOptions(options);
  const Runtime& rt = *runtime_;
  std::vector<std::vector<int64_t>> sources;
  std::vector<int64_t> max_lengths;
  for (size_t i = 0; i < texts.size(); ++i) {
    sources.push_back(rt.Tokenize(*rt.source_tokenizer, texts[i], "text " + std::to_string(i),
                                  config_.max_positions));
    const auto source_tokens = static_cast<double>(sources.back().size() + 1);
    const auto bound = static_cast<int64_t>(options.max_length_a * source_tokens) + options.max_length_b;
    max_lengths.push_back(std::clamp<int64_t>(bound, 1, config_.max_positions - 1));
    sources.back().push_back(config_.special.eos);
  }

  c10::InferenceMode guard;
  const EncoderOutput memory = rt.transformer->Encode(PadBatch(sources, config_.special.pad));
  std::vector<std::vector<Hypothesis>> found;
  if (options.beam_size == 1) {
    for (Hypothesis& h : GreedySearch(*rt.transformer, memory, max_lengths)) {
      found.push_back({std::move(h)});
    }
  } else {
    found = BeamSearch(*rt.transformer, memory, max_lengths,
                       {options.beam_size, options.n_best, options.length_penalty});
  }
  std::vector<std::vector<TranslationHypothesis>> out(found.size());
  for (size_t i = 0; i < found.size(); ++i) {
    for (const Hypothesis& h : found[i]) {
      TranslationHypothesis t;
      const std::vector<int> ids(h.tokens.begin(), h.tokens.end());
      t.text = rt.target_tokenizer->Decode(ids);
      t.score = h.score;
      if (options.return_tokens) {
        for (int id : ids) t.tokens.push_back(rt.target_tokenizer->Piece(id));
      }
      out[i].push_back(std::move(t));
    }
  }
  return out;
}

std::vector<TextScore> ServedModel::ScoreTexts(const std::vector<std::string>& texts) const {
  if (config_.is_mt()) {
    throw InvalidInputError("model '" + name_ + "' is a transformer_mt; score it with "
                            "source/target pairs, not plain texts");
  }
  CheckBatch(texts.size(), "texts");
  const Runtime& rt = *runtime_;
  std::vector<std::vector<int64_t>> targets;
  for (size_t i = 0; i < texts.size(); ++i) {
    targets.push_back(rt.Tokenize(*rt.target_tokenizer, texts[i], "text " + std::to_string(i),
                                  config_.max_positions));
  }
  c10::InferenceMode guard;
  const auto logprobs = ScoreTargets(*rt.transformer, EncoderOutput{}, targets);
  std::vector<TextScore> out;
  for (size_t i = 0; i < targets.size(); ++i) out.push_back(rt.MakeScore(targets[i], logprobs[i]));
  return out;
}

std::vector<TextScore> ServedModel::ScorePairs(
    const std::vector<std::pair<std::string, std::string>>& pairs) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ + "' is a transformer_lm; score it with plain "
                            "texts, not source/target pairs");
  }
  CheckBatch(pairs.size(), "pairs");
  const Runtime& rt = *runtime_;
  std::vector<std::vector<int64_t>> sources, targets;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::string where = "pair " + std::to_string(i);
    sources.push_back(rt.Tokenize(*rt.source_tokenizer, pairs[i].first, where + " source",
                                  config_.max_positions));
    sources.back().push_back(config_.special.eos);
    targets.push_back(rt.Tokenize(*rt.target_tokenizer, pairs[i].second, where + " target",
                                  config_.max_positions));
  }
  c10::InferenceMode guard;
  const EncoderOutput memory = rt.transformer->Encode(PadBatch(sources, config_.special.pad));
  const auto logprobs = ScoreTargets(*rt.transformer, memory, targets);
  std::vector<TextScore> out;
  for (size_t i = 0; i < targets.size(); ++i) out.push_back(rt.MakeScore(targets[i], logprobs[i]));
  return out;
}

}  // namespace normserve
