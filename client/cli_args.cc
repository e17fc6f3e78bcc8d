#include "client/cli_args.h"

#include <set>
#include <stdexcept>

namespace normserve::cli {

const char kUsage[] =
    R"(usage: normserve [--server HOST:PORT] [--json] [--timeout SECS] [TLS flags]
                 [--token-file F] COMMAND [flags] [TEXT...]

commands:
  translate --model M [--beam N] [--n-best N] [--length-penalty X]
            [--max-length-a X] [--max-length-b N] [--tokens] TEXT...
      translate texts with a transformer_mt model
  score --model M TEXT...
      per-token log-probs and perplexity; for a transformer_mt model each text is
      "SOURCE<TAB>TARGET"
  generate --model M [--temperature X] [--top-k N] [--top-p X] [--seed N]
           [--max-new-tokens N] [--stop STRING] [PROMPT | -]
      continue PROMPT (or stdin with "-") with a transformer_lm model, streamed
  models                     list the models and their state
  load MODEL                 (re)load a model of the repository (--model-control explicit)
  unload MODEL               stop serving a model (--model-control explicit)
  health [--service NAME]    exit 0 when the server (or model/service NAME) is SERVING

translate, score and generate also take --version N (default: newest) and --priority N
(1 first; default: the model's lowest). --model may name a variant group.
Texts come from the arguments, or one per line from stdin when there are none.
--server defaults to 127.0.0.1:50051. --token-file F: a file holding the bearer token that
servers with --auth-tokens-file need (sent as "authorization: Bearer TOKEN"). Errors print
the gRPC status name and message on stderr and exit non-zero.
)";

namespace {

// Flags that take no value.
const std::set<std::string> kSwitches = {"tokens"};

}  // namespace

std::optional<std::string> Args::Flag(const std::string& name) const {
  auto it = flags.find(name);
  if (it == flags.end()) return std::nullopt;
  return it->second;
}

std::optional<double> Args::Number(const std::string& name) const {
  const auto value = Flag(name);
  if (!value) return std::nullopt;
  size_t used = 0;
  double number = 0;
  try {
    number = std::stod(*value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value->size() || value->empty()) {
    throw std::invalid_argument("--" + name + " needs a number, got '" + *value + "'");
  }
  return number;
}

std::optional<Args> ParseArgs(const std::vector<std::string>& argv) {
  Args args;
  size_t i = 0;
  auto value_of = [&](const std::string& flag) {
    if (i + 1 >= argv.size()) throw std::invalid_argument(flag + " needs a value");
    return argv[++i];
  };
  for (; i < argv.size() && args.command.empty(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") return std::nullopt;
    if (a == "--server")
      args.server = value_of(a);
    else if (std::string* field = client::TlsFlagField(a, &args.tls))
      *field = value_of(a);
    else if (a == "--json")
      args.json = true;
    else if (a == "--timeout")
      args.timeout_secs = std::stod(value_of(a));
    else if (a == "--token-file")
      args.token_file = value_of(a);
    else if (a.rfind("--", 0) == 0)
      throw std::invalid_argument("unknown flag " + a);
    else
      args.command = a;
  }
  if (args.command.empty()) throw std::invalid_argument("no command given");
  for (; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--help" || a == "-h") return std::nullopt;
    if (a == "--json") {
      args.json = true;
    } else if (a == "--server") {
      args.server = value_of(a);
    } else if (std::string* field = client::TlsFlagField(a, &args.tls)) {
      *field = value_of(a);
    } else if (a == "--token-file") {
      args.token_file = value_of(a);
    } else if (a == "--") {
      args.texts.insert(args.texts.end(), argv.begin() + static_cast<long>(i) + 1, argv.end());
      break;
    } else if (a.rfind("--", 0) == 0 && a.size() > 2) {
      const std::string name = a.substr(2);
      args.flags[name] = kSwitches.count(name) ? "true" : value_of(a);
    } else {
      args.texts.push_back(a);
    }
  }
  client::CheckChannelTls(args.tls);
  return args;
}

}  // namespace normserve::cli
