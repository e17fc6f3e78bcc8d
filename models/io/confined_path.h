// The files of a model version, confined to its directory: a symbolic link, or a name with
// "../", must not let a model repository make the server read files elsewhere (inference
// servers have had exactly this hole). No torch here.
#pragma once

#include <string>

namespace normserve {

// Checks that `version_dir` and its parent (the model's directory) are real directories,
// not symbolic links, so that a version's files can only come from inside the repository.
// Throws ModelLoadError saying which one is a link and where it points.
void RequireRealModelDirectories(const std::string& version_dir);

// The path to open for `file` (a plain file name) inside `dir`: resolved with its symbolic
// links, and refused with a ModelLoadError when it leaves `dir`. A file that does not exist
// is returned unresolved, for the caller's own "cannot open" error.
std::string ConfinedFile(const std::string& dir, const std::string& file);

}  // namespace normserve
