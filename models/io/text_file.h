// Small text files of a model directory (config.json, vocabularies, Hugging Face configs)
// read whole, with errors that name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace normserve {

// Throws ModelLoadError "<path>: cannot open" when the file cannot be read.
std::string ReadTextFile(const std::string& path);

// ReadTextFile parsed as JSON; throws ModelLoadError "<path>: not valid JSON: ..." too.
nlohmann::json ReadJsonFile(const std::string& path);

}  // namespace normserve
