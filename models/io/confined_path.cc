#include "models/io/confined_path.h"

#include <filesystem>

#include "models/errors.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;

void RequireNotALink(const fs::path& dir, const char* what) {
  std::error_code ec;
  if (fs::is_symlink(dir, ec)) {
    throw ModelLoadError(dir.string() + ": the " + what + " is a symbolic link (to " +
                         fs::read_symlink(dir, ec).string() +
                         "); model and version directories must be real directories inside "
                         "the repository");
  }
}

}  // namespace

void RequireRealModelDirectories(const std::string& version_dir) {
  const fs::path version = fs::path(version_dir).lexically_normal();
  RequireNotALink(version, "version directory");
  RequireNotALink(version.parent_path(), "model directory");
}

std::string ConfinedFile(const std::string& dir, const std::string& file) {
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    throw ModelLoadError(dir + ": '" + file + "' is not a plain file name");
  }
  const fs::path path = fs::path(dir) / file;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return path.string();
  const fs::path resolved = fs::canonical(path, ec);
  const fs::path home = fs::canonical(dir, ec);
  if (ec) return path.string();  // unreadable: the caller's open reports it
  // Inside means: home's components are a prefix of resolved's, and resolved is longer.
  auto r = resolved.begin();
  for (auto h = home.begin(); h != home.end(); ++h, ++r) {
    if (r == resolved.end() || *r != *h) {
      throw ModelLoadError(path.string() + " resolves to " + resolved.string() +
                           ", outside its version directory " + home.string() +
                           "; a model's files must be inside its version directory");
    }
  }
  if (r == resolved.end()) {
    throw ModelLoadError(path.string() + " is the version directory itself, not a file");
  }
  return resolved.string();
}

}  // namespace normserve
