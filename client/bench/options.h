// normserve-bench's command line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/channel.h"

namespace normserve::bench {

struct BenchOptions {
  std::string server;  // required: load goes only here
  client::ChannelTls tls;
  std::string model;
  std::vector<int> concurrency;      // closed-loop steps; or
  std::vector<double> rates;         // open-loop steps (requests/s)
  std::optional<double> duration_s;  // per step, after the warmup; or
  std::optional<int64_t> requests;   // per step, after the warmup
  std::string json_path;
  std::string csv_path;
  std::string rpc;         // "translate", "score", or empty: by the model's architecture
  std::string texts_path;  // empty: the built-in texts
  std::string token_file;  // empty: no bearer token (a token in argv would show)
  std::optional<uint32_t> beam;
  int batch = 1;
  double warmup_s = 1;
  int64_t timeout_ms = 30000;
  int max_outstanding = 4096;
  int connections = 1;
  uint64_t seed = 1;
};

// Parses argv into *options (flags, else their NORMSERVE_BENCH_* environment variables) and
// fills the defaults: --concurrency 1,4,16,64 and --duration-secs 10. Returns the status to
// exit with when normserve-bench is done: 0 after --help or --version, 2 after a usage error
// (printed on stderr); nullopt when it goes on to run.
std::optional<int> ParseBenchOptions(int argc, const char* const* argv, BenchOptions* options);

}  // namespace normserve::bench
