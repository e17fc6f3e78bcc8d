// Helpers shared by the unit suites: fresh random seeds that a failure prints, temporary
// directories, and generated English/German training text. No torch here.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace normserve::testing {

// A fresh seed per call, or NORMSERVE_TEST_SEED when set (to replay a failure).
inline uint64_t TestSeed() {
  if (const char* env = std::getenv("NORMSERVE_TEST_SEED")) return std::stoull(env);
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

inline std::string SeedMessage(uint64_t seed) {
  return "random seed " + std::to_string(seed) +
         " (replay with NORMSERVE_TEST_SEED=" + std::to_string(seed) + ")";
}

// Declares `const uint64_t var` with a fresh seed that every failure below it reports.
#define NORMSERVE_TEST_SEED(var)                         \
  const uint64_t var = ::normserve::testing::TestSeed(); \
  SCOPED_TRACE(::normserve::testing::SeedMessage(var))

// A unique directory under the system's temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::random_device device;
    const auto base = std::filesystem::temp_directory_path();
    for (int attempt = 0; attempt < 100; ++attempt) {
      const auto candidate =
          base / ("normserve_unit_" + std::to_string(::getpid()) + "_" + std::to_string(device()));
      if (std::filesystem::create_directory(candidate)) {
        path_ = candidate.string();
        return;
      }
    }
    throw std::runtime_error("cannot create a temporary directory under " + base.string());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

inline std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Words that cover every character the tokenizer tests use (umlauts and ß included), so
// that SentencePiece (character_coverage 1.0) knows all of them.
inline const std::vector<std::string>& CorpusWords() {
  static const std::vector<std::string> words = {
      "the",     "a",        "house",   "is",      "small",  "big",   "we",    "go",     "home",
      "today",   "tomorrow", "and",     "but",     "cat",    "dog",   "sees",  "runs",   "quickly",
      "slowly",  "river",    "city",    "green",   "blue",   "old",   "new",   "Berlin", "Zurich",
      "water",   "bread",    "music",   "night",   "day",    "das",   "Haus",  "ist",    "klein",
      "groß",    "wir",      "gehen",   "heute",   "morgen", "und",   "aber",  "Katze",  "Hund",
      "sieht",   "läuft",    "schnell", "langsam", "Fluss",  "Stadt", "grün",  "blau",   "alt",
      "neu",     "Brücke",   "Wasser",  "Brot",    "Musik",  "Nacht", "Tag",   "über",   "schön",
      "Mädchen", "Junge",    "fährt",   "Straße",  "Äpfel",  "Öl",    "Übung", "müde",   "hören",
      "zwölf",   "Größe",    "Jahr",    "quiet",   "jump",   "fox",   "vexed", "wizard", "XYZ",
      "Kiosk",   "Quark",    "Yacht",   "Vogel",   "Zug",    "Der",   "Die",   "Das",    "Eis",
      "Ferien",  "Insel",    "Licht",   "Peter",   "Rhein",  "Uhr"};
  return words;
}

// `lines` random sentences of 3..14 words with some punctuation and digits.
inline std::string GenerateCorpus(std::mt19937_64& rng, int lines) {
  const auto& words = CorpusWords();
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  std::uniform_int_distribution<int> length(3, 14);
  std::uniform_int_distribution<int> punct(0, 9);
  std::uniform_int_distribution<int> digit(0, 9);
  const char* endings[] = {".", "!", "?", ",", ";", ":"};
  std::string text;
  for (int i = 0; i < lines; ++i) {
    const int n = length(rng);
    std::string line;
    for (int w = 0; w < n; ++w) {
      if (w) line += ' ';
      if (punct(rng) == 0) {
        line += std::to_string(digit(rng)) + std::to_string(digit(rng));
      } else {
        line += words[pick(rng)];
      }
    }
    line += endings[punct(rng) % 6];
    text += line + "\n";
  }
  return text;
}

}  // namespace normserve::testing
