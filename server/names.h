// What clients name and what comes back to them: model and group names are plain directory
// names, and input echoed in an error message is cut short (a 10 KB name echoed whole made
// the reply overflow gRPC's metadata limit).
#pragma once

#include <string>
#include <string_view>

namespace normserve {

// 1-128 letters, digits, '.', '_' or '-', not starting with '.': a single directory name
// inside the repository, never a path.
bool IsValidModelName(std::string_view name);

// `input` for an error message: quoted, at most its first 64 bytes (cut at a character
// boundary, control characters and invalid UTF-8 escaped), and its length when cut:
// 'abc' or 'abcdef...' (10240 bytes).
std::string QuoteInput(std::string_view input);

}  // namespace normserve
