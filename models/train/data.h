// Training data: text files tokenized with the model's SentencePiece models, batched by token
// count. Batches are formed once (sentences of similar length together, the order among equal
// lengths drawn from the seed) and visited in a fresh seeded order every epoch, so that a
// (seed, epoch, index) triple names one batch and a resumed run sees the same batches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/io/model_config.h"
#include "models/train/train_model.h"

namespace normserve {
class Tokenizer;
}

namespace normserve::train {

struct Corpus {
  std::vector<std::vector<int32_t>> source;  // transformer_mt only, without </s>
  std::vector<std::vector<int32_t>> target;  // without </s>
  std::vector<int64_t> line;                 // the 0-based input line of each sentence
  int64_t skipped_empty = 0;                 // lines with no tokens (on either side)
  int64_t skipped_long = 0;                  // lines that do not fit max_positions with </s>
  size_t size() const { return target.size(); }
  bool parallel() const { return !source.empty(); }
};

// The lines of a text file (without line ends); at most max_lines when max_lines >= 0.
std::vector<std::string> ReadLines(const std::string& path, int64_t max_lines = -1);

// Reads one sentence per line. Sequences of more than max_positions - 1 tokens (the model
// adds </s>) and empty ones are skipped and counted; the files of a pair must have the same
// number of lines (std::runtime_error naming both otherwise).
Corpus LoadParallelCorpus(const std::string& source_path, const std::string& target_path,
                          const Tokenizer& source_tokenizer, const Tokenizer& target_tokenizer,
                          int64_t max_positions);
Corpus LoadTextCorpus(const std::string& path, const Tokenizer& tokenizer, int64_t max_positions);
// The same on lines in memory (`source` empty for an LM).
Corpus TokenizeLines(const std::vector<std::string>& source, const std::vector<std::string>& target,
                     const Tokenizer* source_tokenizer, const Tokenizer& target_tokenizer,
                     int64_t max_positions);

// Sentence indices of each batch: padded size (sentences x longest sequence with </s>, source
// or target) at most max_tokens; a sentence longer than max_tokens gets a batch of its own.
std::vector<std::vector<int64_t>> MakeBatches(const Corpus& corpus, int64_t max_tokens,
                                              uint64_t seed, bool shuffle_within_length = true);

// The order in which epoch `epoch` (1-based) visits `count` batches.
std::vector<int64_t> EpochOrder(int64_t count, uint64_t seed, int64_t epoch);

// Pads the sentences into the model's tensors: source + </s>, </s> + target, target + </s>.
Batch Collate(const Corpus& corpus, const std::vector<int64_t>& indices,
              const SpecialTokens& special);

}  // namespace normserve::train
