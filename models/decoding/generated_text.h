// The text of one Generate stream as it grows token by token: detokenized, cut at the first
// stop string, and released to the client in whole UTF-8 characters, holding back the bytes
// that could still turn into a stop string.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace normserve {

class Tokenizer;

class GeneratedText {
 public:
  // on_text receives each piece of text as it is decided; false stops (the client is gone).
  GeneratedText(const Tokenizer& tokenizer, std::vector<std::string> stop,
                std::function<bool(const std::string& delta)> on_text);

  // Adds one token; false once generation must end (a stop string or the client left).
  bool Push(int64_t token);
  // Releases what was held back; returns the whole text sent.
  std::string Finish();

  bool stopped_by_string() const { return stopped_by_string_; }

 private:
  void SendUpTo(size_t end);

  const Tokenizer& tokenizer_;
  const std::vector<std::string> stop_;
  const std::function<bool(const std::string&)> on_text_;
  size_t holdback_ = 0;
  std::vector<int> generated_;
  std::string text_;  // the continuation so far, cut at a stop string
  size_t sent_ = 0;   // bytes of text_ passed to on_text
  bool stopped_by_string_ = false, cancelled_ = false;
};

}  // namespace normserve
