#include "models/served_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "models/compute.h"
#include "models/decoding/memory_cost.h"
#include "models/decoding/search.h"
#include "models/decoding/step_engine.h"
#include "models/errors.h"
#include "models/io/confined_path.h"
#include "models/io/norm_conversion.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/text/tokenizer.h"
#include "models/text/utf8.h"
#include "models/transformer/transformer.h"

namespace normserve {
namespace {

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& dir, const TokenizerFiles& files,
                                         const ModelConfig& config, int64_t vocab_size,
                                         const std::string& which) {
  TokenizerVocabulary vocabulary;
  if (!files.vocab.empty()) vocabulary.vocab_path = ConfinedFile(dir, files.vocab);
  vocabulary.unk = static_cast<int>(config.special.unk);
  vocabulary.language_tags = config.language_tags;
  auto tokenizer = Tokenizer::Load(ConfinedFile(dir, files.spm), vocabulary);
  // A vocabulary file may leave ids unused (fairseq pads its dictionaries); SentencePiece's
  // own ids must be the model's exactly.
  const int64_t size = tokenizer->vocab_size();
  if (tokenizer->has_vocabulary() ? size > vocab_size : size != vocab_size) {
    const std::string file = files.vocab.empty() ? files.spm : files.vocab;
    throw ModelLoadError(dir + "/" + file + ": the " + which + " tokenizer has " +
                         std::to_string(size) + (tokenizer->has_vocabulary() ? " ids" : " pieces") +
                         " but config.json says " + std::to_string(vocab_size));
  }
  return tokenizer;
}

// Human-readable bytes for error messages: "1.5 GiB".
std::string FormatBytes(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof(out), unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return out;
}

// The cheap checks of a request's texts, before any of them is tokenized: how many entries
// (`what`: texts or pairs; a pair is two texts), and each text's bytes and UTF-8. `texts`
// holds (name for errors, text) pairs.
void CheckTexts(const char* what, size_t entries,
                const std::vector<std::pair<std::string, const std::string*>>& texts,
                const RequestLimits& limits, int64_t max_positions) {
  if (entries == 0) throw InvalidInputError(std::string(what) + " is empty: send at least one");
  if (static_cast<int64_t>(entries) > limits.max_texts) {
    throw InvalidInputError(std::string(what) + " holds " + std::to_string(entries) +
                            " entries; one request takes at most " +
                            std::to_string(limits.max_texts));
  }
  const int64_t max_bytes = limits.max_text_bytes > 0
                                ? limits.max_text_bytes
                                : RequestLimits::kTextBytesPerPosition * max_positions;
  for (const auto& [name, text] : texts) {
    if (text->empty()) throw InvalidInputError(name + " is empty");
    if (static_cast<int64_t>(text->size()) > max_bytes) {
      throw InvalidInputError(name + " is " + std::to_string(text->size()) +
                              " bytes; this server takes at most " + std::to_string(max_bytes) +
                              " bytes per text (--max-text-bytes)");
    }
    size_t bad = 0;
    if (!IsValidUtf8(*text, &bad)) {
      throw InvalidInputError(name + " is not valid UTF-8 (bad byte at offset " +
                              std::to_string(bad) + ")");
    }
  }
}

// Splits sentences into groups of one model call each: longest first by `lengths` (less
// padding), as many per group as fit `budget` by cost(count, longest, longest_second), where
// `second` is another length of each sentence (its source or its output bound) whose group
// maximum the cost depends on too. A sentence always gets a group, even one that does not
// fit alone (the arrival checks refuse those).
template <typename Cost>
std::vector<std::vector<size_t>> GroupByMemory(const std::vector<int64_t>& lengths,
                                               const std::vector<int64_t>& second, int64_t budget,
                                               Cost cost) {
  std::vector<size_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> groups;
  int64_t longest = 0, longest_second = 0;
  for (size_t i : order) {
    const int64_t with_second = std::max(longest_second, second[i]);
    if (groups.empty() || cost(static_cast<int64_t>(groups.back().size()) + 1,
                               std::max(longest, lengths[i]), with_second) > budget) {
      groups.emplace_back();
      longest = lengths[i];
      longest_second = second[i];
    } else {
      longest = std::max(longest, lengths[i]);
      longest_second = with_second;
    }
    groups.back().push_back(i);
  }
  return groups;
}

// The tokens of a request's texts together, checked against limits.max_tokens.
void CheckTotalTokens(const std::vector<const TokenBatch*>& batches, const RequestLimits& limits) {
  int64_t total = 0;
  for (const TokenBatch* batch : batches) {
    for (const auto& text : *batch) total += static_cast<int64_t>(text.size());
  }
  if (total > limits.max_tokens) {
    throw InvalidInputError("the request's texts are " + std::to_string(total) +
                            " tokens together; one request takes at most " +
                            std::to_string(limits.max_tokens) +
                            " (--max-tokens-per-request); split it");
  }
}

}  // namespace

struct ServedModel::Runtime {
  std::unique_ptr<Tokenizer> source_tokenizer;  // transformer_mt only
  std::unique_ptr<Tokenizer> target_tokenizer;
  std::unique_ptr<Transformer> transformer;

  // Tokenizes one text of a request (`what` names it in errors; CheckTexts passed it) and
  // checks its length in tokens.
  std::vector<int64_t> Tokenize(const Tokenizer& tokenizer, const std::string& text,
                                const std::string& what, int64_t max_positions) const {
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
                                                     int64_t version, const std::string& device,
                                                     std::optional<NormKind> convert_norm) {
  if (const std::string why = CheckComputeDevice(device); !why.empty()) throw ModelLoadError(why);
  RequireRealModelDirectories(dir);
  ModelConfig config = LoadModelConfig(ConfinedFile(dir, "config.json"));
  std::shared_ptr<ServedModel> model(
      new ServedModel(std::move(name), version, dir, std::move(config)));
  const ModelConfig& c = model->config_;
  Runtime& rt = *model->runtime_;
  if (c.is_mt()) {
    rt.source_tokenizer = LoadTokenizer(dir, c.source_tokenizer, c, c.source_vocab_size, "source");
  }
  rt.target_tokenizer =
      LoadTokenizer(dir, c.target_tokenizer, c, c.target_vocab_size, c.is_mt() ? "target" : "LM");
  const std::string weights_path = ConfinedFile(dir, "model.safetensors");
  c10::InferenceMode guard;
  std::map<std::string, at::Tensor> weights = LoadWeights(weights_path);
  RequireFiniteWeights(weights, weights_path);
  if (convert_norm) {  // model.json's "convert_norm" (models/io/norm_conversion.h)
    model->config_ = ConvertNorm(c, weights, *convert_norm, weights_path);
    model->norm_label_ = c.norm_label();
  }
  WeightStore store(weights_path, std::move(weights));
  rt.transformer = std::make_unique<Transformer>(c, store);
  rt.transformer->To(c10::Device(device));
  return model;
}

int64_t ServedModel::parameter_count() const { return runtime_->transformer->parameter_count(); }

TokenBatch ServedModel::PrepareTranslate(const std::vector<std::string>& texts,
                                         const TranslationOptions& options,
                                         const RequestLimits& limits) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_lm; Translate needs a "
                            "transformer_mt model (use Score or Generate for language models)");
  }
  ValidateTranslationOptions(options);
  std::vector<std::pair<std::string, const std::string*>> named;
  for (size_t i = 0; i < texts.size(); ++i)
    named.emplace_back("text " + std::to_string(i), &texts[i]);
  CheckTexts("texts", texts.size(), named, limits, config_.max_positions);
  TokenBatch sources;
  size_t longest = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    sources.push_back(runtime_->Tokenize(*runtime_->source_tokenizer, texts[i], named[i].first,
                                         config_.max_positions));
    if (sources[i].size() > sources[longest].size()) longest = i;
  }
  CheckTotalTokens({&sources}, limits);
  const int64_t source_tokens = static_cast<int64_t>(sources[longest].size()) + 1;
  const int64_t output_tokens =
      MaxOutputTokens(options, sources[longest].size(), config_.max_positions);
  const int64_t bytes =
      TranslateMemoryBytes(config_, 1, source_tokens, output_tokens, options.beam_size);
  if (bytes > limits.memory_budget_bytes) {
    throw InvalidInputError(
        named[longest].first + " (" + std::to_string(source_tokens) + " tokens, up to " +
        std::to_string(output_tokens) + " output tokens at beam " +
        std::to_string(options.beam_size) + ") needs an estimated " + FormatBytes(bytes) +
        ", more than this model's memory budget of " + FormatBytes(limits.memory_budget_bytes) +
        " (memory_budget_mb); send a shorter text or a smaller beam_size or max_length");
  }
  return sources;
}

TokenBatch ServedModel::PrepareScoreTexts(const std::vector<std::string>& texts,
                                          const RequestLimits& limits) const {
  if (config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_mt; score it with "
                            "source/target pairs, not plain texts");
  }
  std::vector<std::pair<std::string, const std::string*>> named;
  for (size_t i = 0; i < texts.size(); ++i)
    named.emplace_back("text " + std::to_string(i), &texts[i]);
  CheckTexts("texts", texts.size(), named, limits, config_.max_positions);
  TokenBatch targets;
  for (size_t i = 0; i < texts.size(); ++i) {
    targets.push_back(runtime_->Tokenize(*runtime_->target_tokenizer, texts[i], named[i].first,
                                         config_.max_positions));
  }
  CheckTotalTokens({&targets}, limits);
  CheckScoreFits({}, targets, limits.memory_budget_bytes);
  return targets;
}

std::pair<TokenBatch, TokenBatch> ServedModel::PrepareScorePairs(
    const std::vector<std::pair<std::string, std::string>>& pairs,
    const RequestLimits& limits) const {
  if (!config_.is_mt()) {
    throw InvalidInputError("model '" + name_ +
                            "' is a transformer_lm; score it with plain "
                            "texts, not source/target pairs");
  }
  std::vector<std::pair<std::string, const std::string*>> named;
  for (size_t i = 0; i < pairs.size(); ++i) {
    named.emplace_back("pair " + std::to_string(i) + " source", &pairs[i].first);
    named.emplace_back("pair " + std::to_string(i) + " target", &pairs[i].second);
  }
  CheckTexts("pairs", pairs.size(), named, limits, config_.max_positions);
  TokenBatch sources, targets;
  for (size_t i = 0; i < pairs.size(); ++i) {
    sources.push_back(runtime_->Tokenize(*runtime_->source_tokenizer, pairs[i].first,
                                         named[2 * i].first, config_.max_positions));
    targets.push_back(runtime_->Tokenize(*runtime_->target_tokenizer, pairs[i].second,
                                         named[2 * i + 1].first, config_.max_positions));
  }
  CheckTotalTokens({&sources, &targets}, limits);
  CheckScoreFits(sources, targets, limits.memory_budget_bytes);
  return {std::move(sources), std::move(targets)};
}

void ServedModel::CheckScoreFits(const TokenBatch& sources, const TokenBatch& targets,
                                 int64_t budget) const {
  for (size_t i = 0; i < targets.size(); ++i) {
    const int64_t source_tokens = sources.empty() ? 0 : static_cast<int64_t>(sources[i].size()) + 1;
    const int64_t target_tokens = static_cast<int64_t>(targets[i].size()) + 1;
    const int64_t bytes = ScoreMemoryBytes(config_, 1, source_tokens, target_tokens);
    if (bytes > budget) {
      throw InvalidInputError((sources.empty() ? "text " : "pair ") + std::to_string(i) +
                              " needs an estimated " + FormatBytes(bytes) +
                              " to score, more than this model's memory budget of " +
                              FormatBytes(budget) + " (memory_budget_mb); send a shorter text");
    }
  }
}

std::vector<std::vector<TranslationHypothesis>> ServedModel::TranslateTokens(
    const TokenBatch& sources, const TranslationOptions& options,
    int64_t memory_budget_bytes) const {
  std::vector<std::vector<TranslationHypothesis>> out;
  StepEngine engine(*this, memory_budget_bytes);
  engine.Add(TranslationWork{sources, options, {}, [&](auto&& results) { out = results; }, {}});
  while (engine.Step()) {
  }
  return out;
}

std::vector<TranslationHypothesis> ServedModel::ToTranslations(const std::vector<Hypothesis>& found,
                                                               bool return_tokens) const {
  const Tokenizer& tokenizer = *runtime_->target_tokenizer;
  std::vector<TranslationHypothesis> out;
  for (const Hypothesis& h : found) {
    TranslationHypothesis t;
    const std::vector<int> ids(h.tokens.begin(), h.tokens.end());
    t.text = tokenizer.Decode(ids);
    t.score = h.score;
    t.token_count = static_cast<int64_t>(ids.size());
    if (return_tokens) {
      for (int id : ids) t.tokens.push_back(tokenizer.Piece(id));
    }
    out.push_back(std::move(t));
  }
  return out;
}

const Transformer& ServedModel::transformer() const { return *runtime_->transformer; }
const Tokenizer& ServedModel::target_tokenizer() const { return *runtime_->target_tokenizer; }

std::vector<TextScore> ServedModel::ScoreTokens(const TokenBatch& sources,
                                                const TokenBatch& targets,
                                                const StopSentenceFn& stop,
                                                int64_t memory_budget_bytes) const {
  const Runtime& rt = *runtime_;
  std::vector<int64_t> lengths, source_lengths;
  for (size_t i = 0; i < targets.size(); ++i) {
    lengths.push_back(static_cast<int64_t>(targets[i].size()) + 1);
    source_lengths.push_back(sources.empty() ? 0 : static_cast<int64_t>(sources[i].size()) + 1);
  }
  const auto groups = GroupByMemory(lengths, source_lengths, memory_budget_bytes,
                                    [&](int64_t count, int64_t target, int64_t source) {
                                      return ScoreMemoryBytes(config_, count, source, target);
                                    });
  std::vector<TextScore> out(targets.size());
  c10::InferenceMode guard;
  for (const std::vector<size_t>& group : groups) {
    bool stopped = false;
    for (size_t i : group) stopped = stopped || (stop && stop(static_cast<int64_t>(i)));
    if (stopped) continue;
    TokenBatch group_targets;
    EncoderOutput memory;
    if (config_.is_mt()) {
      TokenBatch inputs;
      for (size_t i : group) {
        inputs.push_back(sources[i]);
        inputs.back().push_back(config_.special.eos);
      }
      memory = rt.transformer->Encode(
          PadBatch(inputs, config_.special.padding(), rt.transformer->device()));
    }
    for (size_t i : group) group_targets.push_back(targets[i]);
    const auto logprobs = ScoreTargets(*rt.transformer, memory, group_targets);
    for (size_t g = 0; g < group.size(); ++g) {
      out[group[g]] = rt.MakeScore(group_targets[g], logprobs[g]);
    }
  }
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
                                                  const GenerationOptions& o,
                                                  const RequestLimits& limits) const {
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
    CheckTexts("prompt", 1, {{"prompt", &prompt}}, limits, config_.max_positions);
    ids = runtime_->Tokenize(*runtime_->target_tokenizer, prompt, "prompt", config_.max_positions);
  }
  // </s> + prompt + new tokens must fit the positions.
  const int64_t room = config_.max_positions - 1 - static_cast<int64_t>(ids.size());
  require(o.max_new_tokens <= room,
          "the prompt is " + std::to_string(ids.size()) + " tokens, which leaves room for " +
              std::to_string(room) + " new tokens (max_positions " +
              std::to_string(config_.max_positions) + "); lower max_new_tokens");
  const int64_t bytes =
      GenerateMemoryBytes(config_, static_cast<int64_t>(ids.size()) + 1, o.max_new_tokens);
  require(bytes <= limits.memory_budget_bytes,
          "the prompt and max_new_tokens need an estimated " + FormatBytes(bytes) +
              ", more than this model's memory budget of " +
              FormatBytes(limits.memory_budget_bytes) +
              " (memory_budget_mb); lower max_new_tokens or shorten the prompt");
  return ids;
}

GenerationResult ServedModel::Generate(
    const std::vector<int64_t>& prompt, const GenerationOptions& o,
    const std::function<bool(const std::string& delta)>& on_text) const {
  GenerationResult out;
  StepEngine engine(*this, RequestLimits::kUnlimited);
  GenerationWork work;
  work.prompt = prompt;
  work.options = o;
  work.on_text = on_text;
  work.done = [&](GenerationResult&& result) { out = std::move(result); };
  engine.Add(std::move(work));
  while (engine.Step()) {
  }
  return out;
}

}  // namespace normserve
