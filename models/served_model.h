// One loaded model version as the server uses it: texts in, texts and scores out. The
// header is free of torch and SentencePiece so that gRPC code can include it cheaply.
#pragma once

#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/decoding/translation_options.h"
#include "models/io/model_config.h"

namespace normserve {

class Tokenizer;
class Transformer;
struct Hypothesis;

struct TranslationHypothesis {
  std::string text;
  double score = 0;                 // length-normalized log-probability
  int64_t token_count = 0;          // output tokens, </s> excluded
  std::vector<std::string> tokens;  // their pieces, when asked for
};

struct TokenScore {
  std::string token;
  double logprob = 0;
};

struct TextScore {
  std::vector<TokenScore> tokens;  // every predicted token, </s> included
  double total_logprob = 0;
  double perplexity = 0;
};

struct GenerationOptions {
  static constexpr int64_t kMaxNewTokens = 4096;
  static constexpr size_t kMaxStopStrings = 16;

  double temperature = 1.0;  // 0..10; 0 is greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // (0, 1]
  uint64_t seed = 0;
  int64_t max_new_tokens = 32;
  std::vector<std::string> stop;  // generation ends before the first of these strings
};

struct GenerationResult {
  std::string text;
  int64_t tokens = 0;
  std::string finish_reason;  // "eos", "length", "stop" or "cancelled"
};

// Token ids of one request's texts, checked against the model's limits.
using TokenBatch = std::vector<std::vector<int64_t>>;

// What one request may ask of a model. Bytes and counts are checked before any tokenizing
// (SentencePiece is quadratic on long runs of characters outside its vocabulary), and the
// memory of the model call is estimated from the token counts before anything runs.
struct RequestLimits {
  // Bytes per text allowed per position of the model when max_text_bytes is 0: 16 KiB for
  // 256 positions, far beyond what 255 tokens of real text take.
  static constexpr int64_t kTextBytesPerPosition = 64;
  static constexpr int64_t kUnlimited = INT64_MAX;

  int64_t max_texts = 1024;                  // texts or pairs per request
  int64_t max_tokens = 65536;                // tokens of all its texts (sources and targets)
  int64_t max_text_bytes = 0;                // per text; 0: kTextBytesPerPosition * max_positions
  int64_t memory_budget_bytes = kUnlimited;  // one model call; every single text must fit
};

// Asked during decoding for each sentence of a batch; true stops it early.
using StopSentenceFn = std::function<bool(int64_t sentence)>;

class ServedModel {
 public:
  // Loads <dir>/config.json, <dir>/model.safetensors and the tokenizer files the config
  // names, onto `device` ("cpu", "cuda", "cuda:N"). With convert_norm, serves the model's
  // lossless equivalent with that norm (models/io/norm_conversion.h). Throws ModelLoadError
  // saying which file is wrong and how.
  static std::shared_ptr<const ServedModel> Load(const std::string& dir, std::string name,
                                                 int64_t version, const std::string& device = "cpu",
                                                 std::optional<NormKind> convert_norm = {});
  ~ServedModel();

  // The checks and the tokenization of a request, split from the model work so that a
  // batcher can check at arrival and run several requests as one batch. They throw
  // InvalidInputError for a request the model cannot serve (empty, too long, invalid UTF-8,
  // options out of range, the wrong architecture, a text whose model call alone would exceed
  // the memory budget), saying what to change.
  TokenBatch PrepareTranslate(const std::vector<std::string>& texts,
                              const TranslationOptions& options,
                              const RequestLimits& limits = {}) const;
  TokenBatch PrepareScoreTexts(const std::vector<std::string>& texts,
                               const RequestLimits& limits = {}) const;
  // Sources and targets of source/target pairs.
  std::pair<TokenBatch, TokenBatch> PrepareScorePairs(
      const std::vector<std::pair<std::string, std::string>>& pairs,
      const RequestLimits& limits = {}) const;

  // The model work of one request on its own, on a step engine of its own
  // (decoding/step_engine.h; the server shares one engine among requests): sentences join as
  // the memory budget allows; results come back in input order.
  std::vector<std::vector<TranslationHypothesis>> TranslateTokens(
      const TokenBatch& sources, const TranslationOptions& options,
      int64_t memory_budget_bytes = RequestLimits::kUnlimited) const;
  // LM texts (sources empty) or MT pairs, longest first, in as many model calls as the memory
  // budget needs (decoding/memory_cost.h). A sentence that `stop` stops before its model call
  // gets an empty score.
  std::vector<TextScore> ScoreTokens(const TokenBatch& sources, const TokenBatch& targets,
                                     const StopSentenceFn& stop = {},
                                     int64_t memory_budget_bytes = RequestLimits::kUnlimited) const;

  // Prepare and run in one call.
  std::vector<std::vector<TranslationHypothesis>> Translate(
      const std::vector<std::string>& texts, const TranslationOptions& options) const;
  std::vector<TextScore> ScoreTexts(const std::vector<std::string>& texts) const;
  std::vector<TextScore> ScorePairs(
      const std::vector<std::pair<std::string, std::string>>& pairs) const;

  // Checks a Generate request and returns its prompt's tokens.
  std::vector<int64_t> PrepareGenerate(const std::string& prompt, const GenerationOptions& options,
                                       const RequestLimits& limits = {}) const;
  // Continues the prompt on a step engine of its own; on_text receives each new piece of text
  // as it is decided (always whole UTF-8 characters) and returns false to stop (the client
  // went away).
  GenerationResult Generate(const std::vector<int64_t>& prompt, const GenerationOptions& options,
                            const std::function<bool(const std::string& delta)>& on_text) const;

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const std::string& norm_label() const { return norm_label_; }
  int64_t parameter_count() const;

  // For the step engine (decoding/step_engine.h).
  const Transformer& transformer() const;
  const Tokenizer& target_tokenizer() const;
  // Hypotheses as texts (and pieces, with return_tokens).
  std::vector<TranslationHypothesis> ToTranslations(const std::vector<Hypothesis>& found,
                                                    bool return_tokens) const;

 private:
  struct Runtime;
  ServedModel(std::string name, int64_t version, std::string dir, ModelConfig config);
  // Throws InvalidInputError when one sentence alone would need more than `budget` bytes.
  void CheckScoreFits(const TokenBatch& sources, const TokenBatch& targets, int64_t budget) const;

  std::string name_;
  int64_t version_;
  std::string dir_;
  ModelConfig config_;
  std::string norm_label_;
  std::unique_ptr<Runtime> runtime_;
};

}  // namespace normserve
