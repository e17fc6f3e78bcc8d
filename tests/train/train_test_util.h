// Helpers of the trainer tests: tiny synthetic corpora and configs, plus the unit suites' seeds
// (NORMSERVE_TEST_SEED), temporary directories and file helpers.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/test_util.h"

namespace normserve::train::testing {

using ::normserve::testing::ReadTextFile;
using ::normserve::testing::TempDir;
using ::normserve::testing::WriteTextFile;

// A word-for-word "translation" task: German sentences of 2..6 words from a 16-word
// vocabulary and their English word-by-word renderings (same order), one per line.
struct TinyParallel {
  std::string source, target;
};
inline TinyParallel MakeTinyParallel(uint64_t seed, int lines) {
  static const std::vector<std::pair<std::string, std::string>> dictionary = {
      {"das", "the"},    {"Haus", "house"}, {"ist", "is"},     {"klein", "small"},
      {"groß", "big"},   {"wir", "we"},     {"gehen", "go"},   {"heute", "today"},
      {"Katze", "cat"},  {"Hund", "dog"},   {"sieht", "sees"}, {"Fluss", "river"},
      {"Stadt", "city"}, {"grün", "green"}, {"alt", "old"},    {"neu", "new"}};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> word(0, dictionary.size() - 1);
  std::uniform_int_distribution<int> length(2, 6);
  TinyParallel out;
  for (int i = 0; i < lines; ++i) {
    const int n = length(rng);
    std::string s, t;
    for (int w = 0; w < n; ++w) {
      const auto& [de, en] = dictionary[word(rng)];
      s += (w ? " " : "") + de;
      t += (w ? " " : "") + en;
    }
    out.source += s + "\n";
    out.target += t + "\n";
  }
  return out;
}

// An LM text a tiny model can learn: 5 consecutive words of a fixed cycle of 16, from a
// random start. Only the first word is uncertain: the best NLL is ln(16)/6 = 0.46 nats per
// token (</s> included).
inline std::string MakeTinyCyclicText(uint64_t seed, int lines) {
  static const std::vector<std::string> cycle = {"the",  "house", "is",  "small", "big",  "we",
                                                 "go",   "today", "cat", "dog",   "sees", "river",
                                                 "city", "green", "old", "new"};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> start(0, cycle.size() - 1);
  std::string out;
  for (int i = 0; i < lines; ++i) {
    const size_t s = start(rng);
    for (size_t j = 0; j < 5; ++j) out += (j ? " " : "") + cycle[(s + j) % cycle.size()];
    out += "\n";
  }
  return out;
}

// A tiny config.json (no vocabulary sizes or tokenizer names; the trainer fills them in).
inline nlohmann::json TinyConfig(bool mt, const nlohmann::json& norm) {
  nlohmann::json c = {{"architecture", mt ? "transformer_mt" : "transformer_lm"},
                      {"embed_dim", 32},
                      {"ffn_dim", 64},
                      {"attention_heads", 2},
                      {"decoder_layers", 1},
                      {"normalize_before", true},
                      {"activation", "relu"},
                      {"max_positions", 32},
                      {"norm", norm}};
  if (mt) c["encoder_layers"] = 1;
  return c;
}

}  // namespace normserve::train::testing
