#include "models/io/text_file.h"

#include <fstream>
#include <sstream>

#include "models/errors.h"

namespace normserve {

std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ModelLoadError(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

nlohmann::json ReadJsonFile(const std::string& path) {
  const std::string text = ReadTextFile(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(path + ": not valid JSON: " + e.what());
  }
}

}  // namespace normserve
