// The texts normserve-bench sends: a built-in list of short sentence pairs, or a file.
#pragma once

#include <string>
#include <vector>

namespace normserve::bench {

// A German sentence and an English translation of it. Translation models translate
// `source`; scoring a translation model forces `target` given `source`; language models
// score `target` (English).
struct TextPair {
  std::string source;
  std::string target;
};

// About fifty short, varied German/English pairs.
const std::vector<TextPair>& BuiltinTexts();

// One text per line; blank lines are skipped. With `pairs`, each line must be
// SOURCE<TAB>TARGET; otherwise the whole line is the text (in both fields). Throws
// std::invalid_argument with a message for the user (unreadable file, no texts, a line
// without a tab).
std::vector<TextPair> LoadTexts(const std::string& path, bool pairs);

}  // namespace normserve::bench
