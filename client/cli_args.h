// The normserve CLI's command line: global flags, a command, its flags and its texts.
#pragma once

#include <map>
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
  std::map<std::string, std::string> flags;  // command flags, without the leading --
  std::vector<std::string> texts;            // arguments, else lines of stdin

  std::optional<std::string> Flag(const std::string& name) const;
  // The flag as a number, checked; throws std::invalid_argument naming it.
  std::optional<double> Number(const std::string& name) const;
};

// Throws std::invalid_argument with a message for the user; returns nullopt for --help.
// The TLS flags (client/channel.h) go before or after the command, like --server.
std::optional<Args> ParseArgs(const std::vector<std::string>& argv);

extern const char kUsage[];  // followed by client::kTlsUsage

}  // namespace normserve::cli
