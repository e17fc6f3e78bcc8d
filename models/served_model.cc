#include "models/served_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>

#include "models/compute.h"
#include "models/decoding/sampling.h"
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
                         std::to_string(tokenizer->vocab_size()) + " pieces but config.json says " +
                         std::to_string(vocab_size));
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

  // Tokenizes one text of a request (`what` names it in errors) and checks its length.
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

  TextScore MakeScore(const std::vector<int64_t>& target,
                      const std::vector<double>& logprobs) const {
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
                                                     int64_t version, const std::string& device) {
  if (const std::string why = CheckComputeDevice(device); !why.empty()) throw ModelLoadError(why);
  ModelConfig config = LoadModelConfig(dir + "/config.json");
  std::shared_ptr<ServedModel> model(
      new ServedModel(std::move(name), version, dir, std::move(config)));
  const ModelConfig& c = model->config_;
  Runtime& rt = *model->runtime_;
  if (c.is_mt()) {
    rt.source_tokenizer = LoadTokenizer(dir, c.source_tokenizer, c.source_vocab_size, "source");
  }
  rt.target_tokenizer =
      LoadTokenizer(dir, c.target_tokenizer, c.target_vocab_size, c.is_mt() ? "target" : "LM");
  const std::string weights_path = dir + "/model.safetensors";
  c10::InferenceMode guard;
  std::map<std::string, at::Tensor> weights = LoadWeights(weights_path);
  RequireFiniteWeights(weights, weights_path);
  WeightStore store(weights_path, std::move(weights));
  rt.transformer = std::make_unique<Transformer>(c, store);
  rt.transformer->To(c10::Device(device));
  return model;
}

int64_t ServedModel::parameter_count() const { return runtime_->transformer->parameter_count(); }

TokenBatch ServedModel::PrepareTranslate(const std::vector<std::string>& texts,
                                         const TranslationOptions& options) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_lm; Translate needs a "
                            "transformer_mt model (use Score or Generate for language models)");
  }
  CheckBatch(texts.size(), "texts");
  ValidateTranslationOptions(options);
  TokenBatch sources;
  for (size_t i = 0; i < texts.size(); ++i) {
    sources.push_back(runtime_->Tokenize(*runtime_->source_tokenizer, texts[i],
                                         "text " + std::to_string(i), config_.max_positions));
  }
  return sources;
}

TokenBatch ServedModel::PrepareScoreTexts(const std::vector<std::string>& texts) const {
  if (config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_mt; score it with "
                            "source/target pairs, not plain texts");
  }
  CheckBatch(texts.size(), "texts");
  TokenBatch targets;
  for (size_t i = 0; i < texts.size(); ++i) {
    targets.push_back(runtime_->Tokenize(*runtime_->target_tokenizer, texts[i],
                                         "text " + std::to_string(i), config_.max_positions));
  }
  return targets;
}

std::pair<TokenBatch, TokenBatch> ServedModel::PrepareScorePairs(
    const std::vector<std::pair<std::string, std::string>>& pairs) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_lm; score it with plain "
                            "texts, not source/target pairs");
  }
  CheckBatch(pairs.size(), "pairs");
  TokenBatch sources, targets;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::string where = "pair " + std::to_string(i);
    sources.push_back(runtime_->Tokenize(*runtime_->source_tokenizer, pairs[i].first,
                                         where + " source", config_.max_positions));
    targets.push_back(runtime_->Tokenize(*runtime_->target_tokenizer, pairs[i].second,
                                         where + " target", config_.max_positions));
  }
  return {std::move(sources), std::move(targets)};
}

std::vector<std::vector<TranslationHypothesis>> ServedModel::TranslateTokens(
    const TokenBatch& sources, const TranslationOptions& options,
    const StopSentenceFn& stop) const {
  const Runtime& rt = *runtime_;
  TokenBatch inputs;
  std::vector<int64_t> max_lengths;
  for (const auto& source : sources) {
    const auto source_tokens = static_cast<double>(source.size() + 1);
    const auto bound =
        static_cast<int64_t>(options.max_length_a * source_tokens) + options.max_length_b;
    max_lengths.push_back(std::clamp<int64_t>(bound, 1, config_.max_positions - 1));
    inputs.push_back(source);
    inputs.back().push_back(config_.special.eos);
  }
  c10::InferenceMode guard;
  const EncoderOutput memory =
      rt.transformer->Encode(PadBatch(inputs, config_.special.pad, rt.transformer->device()));
  std::vector<std::vector<Hypothesis>> found;
  if (options.beam_size == 1) {
    for (Hypothesis& h :
         GreedySearch(*rt.transformer, memory, max_lengths, options.length_penalty, stop)) {
      found.push_back({std::move(h)});
    }
  } else {
    found = BeamSearch(*rt.transformer, memory, max_lengths,
                       {options.beam_size, options.n_best, options.length_penalty}, stop);
  }
  std::vector<std::vector<TranslationHypothesis>> out(found.size());
  for (size_t i = 0; i < found.size(); ++i) {
    for (const Hypothesis& h : found[i]) {
      TranslationHypothesis t;
      const std::vector<int> ids(h.tokens.begin(), h.tokens.end());
      t.text = rt.target_tokenizer->Decode(ids);
      t.score = h.score;
      t.token_count = static_cast<int64_t>(ids.size());
      if (options.return_tokens) {
        for (int id : ids) t.tokens.push_back(rt.target_tokenizer->Piece(id));
      }
      out[i].push_back(std::move(t));
    }
  }
  return out;
}

std::vector<TextScore> ServedModel::ScoreTokens(const TokenBatch& sources,
                                                const TokenBatch& targets) const {
  const Runtime& rt = *runtime_;
  c10::InferenceMode guard;
  EncoderOutput memory;
  if (config_.is_mt()) {
    TokenBatch inputs = sources;
    for (auto& s : inputs) s.push_back(config_.special.eos);
    memory =
        rt.transformer->Encode(PadBatch(inputs, config_.special.pad, rt.transformer->device()));
  }
  const auto logprobs = ScoreTargets(*rt.transformer, memory, targets);
  std::vector<TextScore> out;
  for (size_t i = 0; i < targets.size(); ++i) out.push_back(rt.MakeScore(targets[i], logprobs[i]));
  return out;
}

std::vector<std::vector<TranslationHypothesis>> ServedModel::Translate(
    const std::vector<std::string>& texts, const TranslationOptions& options) const {
  return TranslateTokens(PrepareTranslate(texts, options), options);
}

std::vector<TextScore> ServedModel::ScoreTexts(const std::vector<std::string>& texts) const {
  return ScoreTokens({}, PrepareScoreTexts(texts));
}

std::vector<TextScore> ServedModel::ScorePairs(
    const std::vector<std::pair<std::string, std::string>>& pairs) const {
  const auto [sources, targets] = PrepareScorePairs(pairs);
  return ScoreTokens(sources, targets);
}

std::vector<int64_t> ServedModel::PrepareGenerate(const std::string& prompt,
                                                  const GenerationOptions& o) const {
  if (config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_mt; Generate needs a "
                            "transformer_lm model (use Translate)");
  }
  const auto require = [](bool ok, const std::string& message) {
    if (!ok) throw InvalidInputError(message);
  };
  require(std::isfinite(o.temperature) && o.temperature >= 0 && o.temperature <= 10,
          "temperature is " + std::to_string(o.temperature) + "; it must be in 0..10 (0 = greedy)");
  require(o.top_k >= 0 && o.top_k <= config_.target_vocab_size,
          "top_k is " + std::to_string(o.top_k) + "; it must be in 0.." +
              std::to_string(config_.target_vocab_size) + " (0 = off)");
  require(std::isfinite(o.top_p) && o.top_p > 0 && o.top_p <= 1,
          "top_p is " + std::to_string(o.top_p) + "; it must be in (0, 1]");
  require(o.max_new_tokens >= 1 && o.max_new_tokens <= GenerationOptions::kMaxNewTokens,
          "max_new_tokens is " + std::to_string(o.max_new_tokens) + "; it must be in 1.." +
              std::to_string(GenerationOptions::kMaxNewTokens));
  require(o.stop.size() <= GenerationOptions::kMaxStopStrings,
          "at most " + std::to_string(GenerationOptions::kMaxStopStrings) + " stop strings");
  for (const std::string& s : o.stop) {
    require(!s.empty() && s.size() <= 256 && IsValidUtf8(s),
            "stop strings must be 1..256 bytes of valid UTF-8");
  }
  std::vector<int64_t> ids;
  if (!prompt.empty()) {
    ids = runtime_->Tokenize(*runtime_->target_tokenizer, prompt, "prompt", config_.max_positions);
  }
  // </s> + prompt + new tokens must fit the positions.
  const int64_t room = config_.max_positions - 1 - static_cast<int64_t>(ids.size());
  require(o.max_new_tokens <= room,
          "the prompt is " + std::to_string(ids.size()) + " tokens, which leaves room for " +
              std::to_string(room) + " new tokens (max_positions " +
              std::to_string(config_.max_positions) + "); lower max_new_tokens");
  return ids;
}

GenerationResult ServedModel::Generate(
    const std::vector<int64_t>& prompt, const GenerationOptions& o,
    const std::function<bool(const std::string& delta)>& on_text) const {
  const Runtime& rt = *runtime_;
  // The last bytes are held back while they could still turn into a stop string, so that a
  // client never receives part of one.
  size_t holdback = 0;
  for (const std::string& s : o.stop) holdback = std::max(holdback, s.size() - 1);
  GenerationResult result;
  std::vector<int> generated;
  std::string text;  // the continuation so far, cut at a stop string
  size_t sent = 0;   // bytes of text passed to on_text
  bool stopped_by_string = false, cancelled = false;
  const auto send_up_to = [&](size_t end) {
    if (end > sent && !cancelled) {
      if (!on_text(text.substr(sent, end - sent))) cancelled = true;
      sent = end;
    }
  };
  const auto on_token = [&](int64_t token) {
    generated.push_back(static_cast<int>(token));
    ++result.tokens;
    std::string decoded = rt.target_tokenizer->Decode(generated);
    // SentencePiece drops the word-boundary space of the first piece; a continuation keeps
    // it, so that prompt + text reads right.
    if (rt.target_tokenizer->Piece(generated.front()).rfind("\xe2\x96\x81", 0) == 0) {
      decoded.insert(0, " ");
    }
    // Detokenizing more pieces only appends, except that a piece can change how the text
    // before it reads; text already sent stays as sent.
    if (decoded.compare(0, sent, text, 0, sent) != 0)
      decoded = text.substr(0, sent) + decoded.substr(std::min(sent, decoded.size()));
    text = std::move(decoded);
    size_t cut = std::string::npos;
    for (const std::string& s : o.stop) cut = std::min(cut, text.find(s));
    if (cut != std::string::npos) {
      text.resize(std::max(cut, sent));
      stopped_by_string = true;
      return false;
    }
    send_up_to(text.size() > holdback ? text.size() - holdback : 0);
    return !cancelled;
  };
  c10::InferenceMode guard;
  const SamplingStop why =
      SampleContinuation(*rt.transformer, prompt,
                         {o.temperature, o.top_k, o.top_p, o.seed, o.max_new_tokens}, on_token);
  send_up_to(text.size());
  result.text = text.substr(0, sent);
  result.finish_reason = stopped_by_string                     ? "stop"
                         : cancelled                           ? "cancelled"
                         : why == SamplingStop::kEndOfSequence ? "eos"
                                                               : "length";
  return result;
}

}  // namespace normserve
