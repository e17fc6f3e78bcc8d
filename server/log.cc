#include "server/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "models/text/utf8.h"

namespace normserve {
namespace {

void Write(const char* level, const std::string& message) {
  static std::mutex mutex;
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "%s.%03dZ %s %s\n", stamp, static_cast<int>(millis), level,
               // Load errors can quote bytes of a broken file: a newline or a stray byte
               // must not forge or break a log line.
               EscapeUnprintable(message).c_str());
  std::fflush(stderr);
}

}  // namespace

void LogInfo(const std::string& message) { Write("INFO", message); }
void LogError(const std::string& message) { Write("ERROR", message); }

}  // namespace normserve
