// The normserve CLI's command line: global flags, a command, its flags and its texts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/channel.h"

namespace normserve::cli {

struct Args {
  std::string server = "127.0.0.1:50051";
  bool json = false;
  double timeout_secs = 60;
  client::ChannelTls tls;
  std::string token_file;  // --token-file: the bearer token's file (a token in argv would show)
  std::string token;       // read from token_file before the first call, sent with every call
  std::string command;
  // translate, score and generate; unset: the server's default.
  std::string model;
  std::optional<uint32_t> version, priority;
  // translate
  std::optional<uint32_t> beam, n_best, max_length_b;
  std::optional<double> length_penalty, max_length_a;
  bool tokens = false;
  // generate
  std::optional<double> temperature, top_p;
  std::optional<uint32_t> top_k, seed, max_new_tokens;
  std::optional<std::string> stop;
  // health
  std::string service;
  std::vector<std::string> texts;  // arguments (load, unload: the model), else lines of stdin
};

// Parses argv into *args (global flags, else their NORMSERVE_* environment variables). Returns
// the status to exit with when normserve is done: 0 after --help or --version, 2 after a
// usage error (printed on stderr); nullopt when it goes on to run the command. The global
// flags go before or after the command.
std::optional<int> ParseArgs(int argc, const char* const* argv, Args* args);

}  // namespace normserve::cli
