// One line per event on stderr, with a UTC timestamp: what a container runtime collects.
#pragma once

#include <string>

namespace normserve {

void LogInfo(const std::string& message);
void LogError(const std::string& message);

}  // namespace normserve
