#include "models/train/data.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <random>
#include <stdexcept>

#include "models/text/tokenizer.h"

namespace normserve::train {
namespace {

std::vector<int32_t> Encode(const Tokenizer& tokenizer, const std::string& text) {
  const std::vector<int> ids = tokenizer.Encode(text);
  return {ids.begin(), ids.end()};
}

// Sequence length with </s>, the longer side of a pair.
int64_t Length(const Corpus& c, int64_t i) {
  int64_t n = static_cast<int64_t>(c.target[i].size()) + 1;
  if (c.parallel()) n = std::max<int64_t>(n, static_cast<int64_t>(c.source[i].size()) + 1);
  return n;
}

at::Tensor Pad(const std::vector<std::vector<int64_t>>& rows, int64_t pad) {
  size_t longest = 0;
  for (const auto& r : rows) longest = std::max(longest, r.size());
  at::Tensor out =
      at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(longest)}, pad, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) a[i][j] = rows[i][j];
  }
  return out;
}

}  // namespace

std::vector<std::string> ReadLines(const std::string& path, int64_t max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::string> lines;
  std::string line;
  while ((max_lines < 0 || static_cast<int64_t>(lines.size()) < max_lines) &&
         std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  return lines;
}

Corpus TokenizeLines(const std::vector<std::string>& source, const std::vector<std::string>& target,
                     const Tokenizer* source_tokenizer, const Tokenizer& target_tokenizer,
                     int64_t max_positions) {
  const bool parallel = source_tokenizer != nullptr;
  Corpus c;
  for (size_t i = 0; i < target.size(); ++i) {
    std::vector<int32_t> t = Encode(target_tokenizer, target[i]);
    std::vector<int32_t> s =
        parallel ? Encode(*source_tokenizer, source[i]) : std::vector<int32_t>{};
    if (t.empty() || (parallel && s.empty())) {
      ++c.skipped_empty;
      continue;
    }
    if (static_cast<int64_t>(std::max(s.size(), t.size())) + 1 > max_positions) {
      ++c.skipped_long;
      continue;
    }
    if (parallel) c.source.push_back(std::move(s));
    c.target.push_back(std::move(t));
    c.line.push_back(static_cast<int64_t>(i));
  }
  return c;
}

Corpus LoadParallelCorpus(const std::string& source_path, const std::string& target_path,
                          const Tokenizer& source_tokenizer, const Tokenizer& target_tokenizer,
                          int64_t max_positions) {
  const std::vector<std::string> src = ReadLines(source_path);
  const std::vector<std::string> tgt = ReadLines(target_path);
  if (src.size() != tgt.size()) {
    throw std::runtime_error(source_path + " has " + std::to_string(src.size()) + " lines but " +
                             target_path + " has " + std::to_string(tgt.size()));
  }
  return TokenizeLines(src, tgt, &source_tokenizer, target_tokenizer, max_positions);
}

Corpus LoadTextCorpus(const std::string& path, const Tokenizer& tokenizer, int64_t max_positions) {
  return TokenizeLines({}, ReadLines(path), nullptr, tokenizer, max_positions);
}

std::vector<std::vector<int64_t>> MakeBatches(const Corpus& corpus, int64_t max_tokens,
                                              uint64_t seed, bool shuffle_within_length) {
  std::vector<int64_t> order(corpus.size());
  std::iota(order.begin(), order.end(), 0);
  if (shuffle_within_length) {
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return Length(corpus, a) < Length(corpus, b); });
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> current;
  int64_t longest = 0;
  for (int64_t i : order) {
    const int64_t n = std::max(longest, Length(corpus, i));
    if (!current.empty() && n * static_cast<int64_t>(current.size() + 1) > max_tokens) {
      batches.push_back(std::move(current));
      current.clear();
      longest = 0;
    }
    current.push_back(i);
    longest = std::max(longest, Length(corpus, i));
  }
  if (!current.empty()) batches.push_back(std::move(current));
  return batches;
}

std::vector<int64_t> EpochOrder(int64_t count, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(epoch), 0x5eedu};
  std::mt19937_64 rng(seq);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

Batch Collate(const Corpus& corpus, const std::vector<int64_t>& indices,
              const SpecialTokens& special) {
  Batch b;
  std::vector<std::vector<int64_t>> src, prev, tgt;
  for (int64_t i : indices) {
    const auto& t = corpus.target[i];
    prev.push_back({special.eos});
    prev.back().insert(prev.back().end(), t.begin(), t.end());
    tgt.emplace_back(t.begin(), t.end());
    tgt.back().push_back(special.eos);
    b.target_tokens += static_cast<int64_t>(t.size()) + 1;
    if (corpus.parallel()) {
      const auto& s = corpus.source[i];
      src.emplace_back(s.begin(), s.end());
      src.back().push_back(special.eos);
      b.source_tokens += static_cast<int64_t>(s.size()) + 1;
    }
  }
  if (corpus.parallel()) b.source = Pad(src, special.pad);
  b.prev_output = Pad(prev, special.pad);
  b.target = Pad(tgt, special.pad);
  b.sentences = static_cast<int64_t>(indices.size());
  return b;
}

}  // namespace normserve::train
