// One loaded model version as the server uses it: texts in, texts and scores out. The
// header is free of torch and SentencePiece so that gRPC code can include it cheaply.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/decoding/translation_options.h"
#include "models/io/model_config.h"

namespace normserve {

struct TranslationHypothesis {
  std::string text;
  double score = 0;  // length-normalized log-probability
  std::vector<std::string> tokens;
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

class ServedModel {
 public:
  // Most texts one request may carry.
  static constexpr size_t kMaxBatchTexts = 1024;

  // Loads <dir>/config.json, <dir>/model.safetensors and the tokenizer files the config
  // names. Throws ModelLoadError saying which file is wrong and how.
  static std::shared_ptr<const ServedModel> Load(const std::string& dir, std::string name,
                                                 int64_t version);
  ~ServedModel();

  // These throw InvalidInputError for a request the model cannot serve (empty, too long,
  // invalid UTF-8, options out of range, the wrong architecture), saying what to change.
  std::vector<std::vector<TranslationHypothesis>> Translate(const std::vector<std::string>& texts,
                                                            const TranslationOptions& options) const;
  std::vector<TextScore> ScoreTexts(const std::vector<std::string>& texts) const;
  std::vector<TextScore> ScorePairs(
      const std::vector<std::pair<std::string, std::string>>& pairs) const;

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const std::string& norm_label() const { return norm_label_; }
  int64_t parameter_count() const;

 private:
  struct Runtime;
  ServedModel(std::string name, int64_t version, std::string dir, ModelConfig config);

  std::string name_;
  int64_t version_;
  std::string dir_;
  ModelConfig config_;
  std::string norm_label_;
  std::unique_ptr<Runtime> runtime_;
};

}  // namespace normserve
