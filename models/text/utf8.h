#pragma once

#include <string>
#include <string_view>

namespace normserve {

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
// On false, *error_offset is the byte offset of the first bad sequence.
bool IsValidUtf8(std::string_view text, size_t* error_offset = nullptr);

// The largest offset <= `end` that does not fall inside a UTF-8 sequence (continuation bytes
// are 10xxxxxx): where text may be cut without splitting a character.
size_t Utf8CutBefore(std::string_view text, size_t end);

// `text` as printable UTF-8 for a message or a log line: control bytes, DEL, the bytes of
// `also`, and every byte >= 0x80 when `text` is not valid UTF-8, become "\xNN".
std::string EscapeUnprintable(std::string_view text, std::string_view also = {});

}  // namespace normserve
