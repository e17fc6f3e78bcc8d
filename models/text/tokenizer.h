// SentencePiece behind a plain std::string API. SentencePiece is never linked into a
// program: tokenizer.cc reaches it through a shim library (spm_api.h says why), which also
// keeps its absl::string_view away from the abseil that gRPC headers pull in.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace normserve {

// What maps a model's ids onto its SentencePiece model, beyond the SentencePiece file.
struct TokenizerVocabulary {
  // A JSON object {piece: id} (Marian's vocab.json, a converted fairseq dictionary) when the
  // model's ids are not SentencePiece's; empty when they are.
  std::string vocab_path;
  int unk = 3;  // the id of a piece the vocabulary lacks
  // Marian's language tags: a text starting with >>xx<< (up to the last << of its first
  // line, as MarianTokenizer's regex ">>.+<<" matches) begins with that tag as one token,
  // and every such tag is cut from the text before SentencePiece sees it.
  bool language_tags = false;
};

class Tokenizer {
 public:
  // Throws ModelLoadError naming the file when it is missing or not a SentencePiece model,
  // or when the vocabulary file is not a JSON object of distinct non-negative ids.
  static std::unique_ptr<Tokenizer> Load(const std::string& path,
                                         const TokenizerVocabulary& vocabulary = {});
  ~Tokenizer();

  std::vector<int> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;
  std::string Piece(int id) const;
  // The ids it can produce: the SentencePiece model's pieces, or the vocabulary's highest id
  // + 1 (a converted fairseq dictionary leaves unused ids at its end).
  int vocab_size() const;
  bool has_vocabulary() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct TokenizerTrainingOptions {
  std::string input_file;    // one sentence per line
  std::string model_prefix;  // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 1000;
  std::string model_type = "unigram";
};

// Trains a SentencePiece model whose special ids follow fairseq's dictionary
// (<s>=0, <pad>=1, </s>=2, <unk>=3), so token ids are model ids without remapping.
void TrainTokenizer(const TokenizerTrainingOptions& options);

}  // namespace normserve
