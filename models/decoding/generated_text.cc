#include "models/decoding/generated_text.h"

#include <algorithm>

#include "models/text/tokenizer.h"
#include "models/text/utf8.h"

namespace normserve {
namespace {

constexpr char kReplacement[] = "\xef\xbf\xbd";  // U+FFFD

// SentencePiece's byte-fallback pieces ("<0xE2>") spell out characters outside the vocabulary
// one byte at a time.
bool IsBytePiece(const std::string& piece) {
  return piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece.back() == '>';
}

// The bytes of the U+FFFD characters that end `text`.
size_t TrailingReplacements(const std::string& text) {
  size_t n = 0;
  while (text.size() >= n + 3 && text.compare(text.size() - n - 3, 3, kReplacement) == 0) n += 3;
  return n;
}

}  // namespace

GeneratedText::GeneratedText(const Tokenizer& tokenizer, std::vector<std::string> stop,
                             std::function<bool(const std::string& delta)> on_text)
    : tokenizer_(tokenizer), stop_(std::move(stop)), on_text_(std::move(on_text)) {
  // The last bytes are held back while they could still turn into a stop string, so that a
  // client never receives part of one.
  for (const std::string& s : stop_) holdback_ = std::max(holdback_, s.size() - 1);
}

void GeneratedText::SendUpTo(size_t end) {
  // Whole characters only: a message must never end inside a UTF-8 sequence (a string field
  // with broken UTF-8 fails the client's parser).
  end = Utf8CutBefore(text_, end);
  if (end > sent_ && !cancelled_) {
    if (!on_text_(text_.substr(sent_, end - sent_))) cancelled_ = true;
    sent_ = end;
  }
}

bool GeneratedText::Push(int64_t token) {
  generated_.push_back(static_cast<int>(token));
  std::string decoded = tokenizer_.Decode(generated_);
  // SentencePiece drops the word-boundary space of the first piece; a continuation keeps it,
  // so that prompt + text reads right.
  if (tokenizer_.Piece(generated_.front()).rfind("\xe2\x96\x81", 0) == 0) decoded.insert(0, " ");
  // Detokenizing more pieces only appends, except that a piece can change how the text
  // before it reads; text already sent stays as sent.
  if (decoded.compare(0, sent_, text_, 0, sent_) != 0)
    decoded = text_.substr(0, sent_) + decoded.substr(std::min(sent_, decoded.size()));
  text_ = std::move(decoded);
  size_t cut = std::string::npos;
  for (const std::string& s : stop_) cut = std::min(cut, text_.find(s));
  if (cut != std::string::npos) {
    text_.resize(std::max(cut, sent_));
    stopped_by_string_ = true;
    return false;
  }
  // Until its last byte piece arrives, a character spelt out in bytes decodes as U+FFFD: held
  // back like a possible stop string, so that what a client receives is what the text becomes.
  size_t held = holdback_;
  if (IsBytePiece(tokenizer_.Piece(static_cast<int>(token)))) {
    held = std::max(held, TrailingReplacements(text_));
  }
  SendUpTo(text_.size() > held ? text_.size() - held : 0);
  return !cancelled_;
}

std::string GeneratedText::Finish() {
  SendUpTo(text_.size());
  return text_.substr(0, sent_);
}

}  // namespace normserve
