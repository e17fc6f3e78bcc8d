#pragma once

#include <string_view>

namespace normserve {

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
// On false, *error_offset is the byte offset of the first bad sequence.
bool IsValidUtf8(std::string_view text, size_t* error_offset = nullptr);

}  // namespace normserve
