// SentencePiece behind a plain std::string API. SentencePiece is never linked into a
// program: tokenizer.cc reaches it through a shim library (spm_api.h says why), which also
// keeps its absl::string_view away from the abseil that gRPC headers pull in.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace normserve {

class Tokenizer {
 public:
  // Throws ModelLoadError naming the file when it is missing or not a SentencePiece model.
  static std::unique_ptr<Tokenizer> Load(const std::string& path);
  ~Tokenizer();

  std::vector<int> Encode(const std::string& text) const;
  std::string Decode(const std::vector<int>& ids) const;
  std::string Piece(int id) const;
  int vocab_size() const;

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
