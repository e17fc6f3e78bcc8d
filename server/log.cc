#include "server/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

#include "models/text/utf8.h"

namespace normserve {
namespace {

// One line of valid UTF-8 whatever the message holds: load errors can quote bytes of a
// broken file, and a newline or a stray byte must not forge or break a log line.
std::string Printable(const std::string& message) {
  const bool valid = IsValidUtf8(message);
  std::string out;
  for (char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || (!valid && byte >= 0x80)) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    } else {
      out += c;
    }
  }
  return out;
}

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
               Printable(message).c_str());
  std::fflush(stderr);
}

}  // namespace

void LogInfo(const std::string& message) { Write("INFO", message); }
void LogError(const std::string& message) { Write("ERROR", message); }

}  // namespace normserve
