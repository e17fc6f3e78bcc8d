// What every normserve binary's command line shares (CLI11, Debian libcli11-dev): --help in
// one layout, --version, environment-variable fallbacks named one way, and usage errors that
// name the flag, printed one way and exiting with one status.
#pragma once

#include <CLI/Error.hpp>
#include <CLI/Validators.hpp>
#include <functional>
#include <optional>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace normserve::command_line {

// The exit status of a usage error in every binary.
inline constexpr int kUsageError = 2;

// The project's version: CMake's project(VERSION), set in one place.
const char* Version();

// The environment variable that stands in for FLAG of PROGRAM when the flag is not given:
// the program's name and the flag's, upper case, '-' as '_', e.g. normserved's
// --model-repository is NORMSERVED_MODEL_REPOSITORY and normserve-bench's --server is
// NORMSERVE_BENCH_SERVER. Prefixed by the program because the client and the server share
// flag names (--tls-cert) with different meanings and may run in one environment.
std::string EnvironmentName(const std::string& program, const std::string& flag);

// A check for an option: a number in [MIN, MAX]. Help shows "MIN..MAX"; the error names the
// flag, the range and the value given.
CLI::Validator NumberIn(double min, double max);

// Gives APP (named after the program, e.g. "normserved") the common conventions: --help/-h,
// --version, the help layout (each option's type, range, default and environment variable).
// Call before adding options.
void Configure(CLI::App* app);

// Gives each option of APP with a long name an environment fallback named for PROGRAM (see
// EnvironmentName); --help and --version have none. Call after adding APP's options; for
// the options of a command, pass the command as APP and the program's name.
void AddEnvironmentFallbacks(const std::string& program, CLI::App* app);

// Parses argv into APP's options, then runs CHECK (checks between flags). Returns the status
// to exit with when the program is done: 0 after printing --help or --version on stdout,
// kUsageError after printing "PROGRAM: MESSAGE" and a pointer to --help on stderr (for a
// CLI11 error, or std::invalid_argument thrown by CHECK or by an option's callback).
// Returns nullopt when the program goes on.
std::optional<int> Parse(CLI::App* app, int argc, const char* const* argv,
                         const std::function<void()>& check = {});

}  // namespace normserve::command_line
