#include "client/bench/options.h"

#include <cmath>
#include <stdexcept>

namespace normserve::bench {

const char kBenchUsage[] = R"(usage: normserve-bench --server HOST:PORT --model M
           [--concurrency 1,4,16,64 | --rate R[,R2...]] [--duration-secs S | --requests N]
           [--json FILE] [--csv FILE] [TLS flags] [options]

A load generator for normserved. Each step runs a warmup, then measures for a fixed time or
request count, and prints one row: throughput (OK responses/s and tokens/s), p50/p90/p99
latency of the OK responses (nearest-rank percentiles, in ms), and the count of each gRPC
status code.

Load tests send as many requests as the server takes: point this only at loopback or at
hosts you run yourself. Requests go to the --server address and nowhere else.

steps (one of; default --concurrency 1,4,16,64):
  --concurrency C[,C...]  closed loop: C workers, each with one request in flight at a time;
                          throughput counts the responses that complete inside the window
  --rate R[,R...]         open loop: Poisson arrivals at R requests/s, each sent at its
                          scheduled time whatever is outstanding; latency runs from the
                          scheduled time, so queueing in the server or client shows
  --max-outstanding N     open loop: arrivals while N requests are in flight are not sent and
                          count as dropped (default 4096)
length of a step (one of; default --duration-secs 10):
  --duration-secs S       measure for S seconds
  --requests N            measure N requests
  --warmup-secs S         unmeasured load before each step (default 1)
requests:
  --rpc translate|score   default: translate for transformer_mt models, score for
                          transformer_lm models (the server's GetModel says which)
  --texts FILE            one text per line, sent in turn (default: ~50 built-in short
                          sentences, German for translation, English for language models);
                          scoring a translation model needs SOURCE<TAB>TARGET lines
  --batch N               texts per request (default 1)
  --beam N                beam size for translate (default: the server's)
  --timeout-ms MS         deadline of each request (default 30000)
  --connections N         spread requests over N HTTP/2 connections (default 1)
  --seed N                seed of the open loop's arrival times (default 1)
  --token-file F          a file holding the bearer token that servers with
                          --auth-tokens-file need (sent as "authorization: Bearer TOKEN")
output:
  --json FILE             parameters and one object per step (the list "steps")
  --csv FILE              one row per step
  --help                  this text

Tokens are the pieces of the best hypothesis for translate (requested with return_tokens)
and the scored tokens, </s> included, for score. Exit status: 0 on success, 1 when the server
is unreachable or rejects the model or the first request (the gRPC status name and message
go to stderr), 2 on a usage error, 130 when interrupted (the finished steps are still
written).
)";

namespace {

double ParseNumber(const std::string& flag, const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !std::isfinite(v)) {
    throw std::invalid_argument(flag + " needs a number, got '" + text + "'");
  }
  return v;
}

int64_t ParseInteger(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  const double v = ParseNumber(flag, text);
  if (v != std::floor(v) || v < static_cast<double>(lo) || v > static_cast<double>(hi)) {
    throw std::invalid_argument(flag + " needs an integer in " + std::to_string(lo) + ".." +
                                std::to_string(hi) + ", got '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

double ParsePositive(const std::string& flag, const std::string& text, double hi) {
  const double v = ParseNumber(flag, text);
  if (v <= 0 || v > hi) {
    throw std::invalid_argument(flag + " needs a number above 0 and at most " +
                                std::to_string(static_cast<int64_t>(hi)) + ", got '" + text + "'");
  }
  return v;
}

std::vector<std::string> SplitCommas(const std::string& flag, const std::string& text) {
  std::vector<std::string> parts;
  size_t begin = 0;
  while (true) {
    const size_t comma = text.find(',', begin);
    parts.push_back(text.substr(begin, comma == std::string::npos ? comma : comma - begin));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  for (const auto& p : parts) {
    if (p.empty())
      throw std::invalid_argument(flag + " needs a comma-separated list, got '" + text + "'");
  }
  return parts;
}

}  // namespace

std::optional<BenchOptions> ParseBenchOptions(const std::vector<std::string>& argv) {
  BenchOptions o;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string flag = argv[i];
    std::optional<std::string> inline_value;
    if (flag == "--help" || flag == "-h") return std::nullopt;
    if (flag.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + flag + "'");
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argv.size()) throw std::invalid_argument(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--server") {
      o.server = value();
    } else if (std::string* field = client::TlsFlagField(flag, &o.tls)) {
      *field = value();
    } else if (flag == "--model") {
      o.model = value();
    } else if (flag == "--concurrency") {
      o.concurrency.clear();
      for (const auto& p : SplitCommas(flag, value())) {
        o.concurrency.push_back(static_cast<int>(ParseInteger(flag, p, 1, 4096)));
      }
    } else if (flag == "--rate") {
      o.rates.clear();
      for (const auto& p : SplitCommas(flag, value()))
        o.rates.push_back(ParsePositive(flag, p, 1e6));
    } else if (flag == "--duration-secs") {
      o.duration_s = ParsePositive(flag, value(), 86400);
    } else if (flag == "--requests") {
      o.requests = ParseInteger(flag, value(), 1, 1'000'000'000);
    } else if (flag == "--warmup-secs") {
      o.warmup_s = ParseNumber(flag, value());
      if (o.warmup_s < 0 || o.warmup_s > 3600) {
        throw std::invalid_argument("--warmup-secs needs a number in 0..3600");
      }
    } else if (flag == "--json") {
      o.json_path = value();
    } else if (flag == "--csv") {
      o.csv_path = value();
    } else if (flag == "--rpc") {
      o.rpc = value();
      if (o.rpc != "translate" && o.rpc != "score") {
        throw std::invalid_argument("--rpc is translate or score, got '" + o.rpc + "'");
      }
    } else if (flag == "--texts") {
      o.texts_path = value();
    } else if (flag == "--token-file") {
      o.token_file = value();
    } else if (flag == "--beam") {
      o.beam = static_cast<uint32_t>(ParseInteger(flag, value(), 1, 64));
    } else if (flag == "--batch") {
      o.batch = static_cast<int>(ParseInteger(flag, value(), 1, 1024));
    } else if (flag == "--timeout-ms") {
      o.timeout_ms = ParseInteger(flag, value(), 1, 3'600'000);
    } else if (flag == "--max-outstanding") {
      o.max_outstanding = static_cast<int>(ParseInteger(flag, value(), 1, 1'000'000));
    } else if (flag == "--connections") {
      o.connections = static_cast<int>(ParseInteger(flag, value(), 1, 256));
    } else if (flag == "--seed") {
      o.seed = static_cast<uint64_t>(ParseInteger(flag, value(), 0, int64_t{1} << 53));
    } else {
      throw std::invalid_argument("unknown flag " + flag);
    }
  }
  if (o.server.empty()) {
    throw std::invalid_argument(
        "--server HOST:PORT is required (load tests belong on loopback "
        "or on hosts you run)");
  }
  if (o.model.empty()) throw std::invalid_argument("--model NAME is required");
  client::CheckChannelTls(o.tls);
  if (!o.concurrency.empty() && !o.rates.empty()) {
    throw std::invalid_argument("give --concurrency or --rate, not both");
  }
  if (o.duration_s && o.requests) {
    throw std::invalid_argument("give --duration-secs or --requests, not both");
  }
  if (o.concurrency.empty() && o.rates.empty()) o.concurrency = {1, 4, 16, 64};
  if (!o.duration_s && !o.requests) o.duration_s = 10;
  if (o.beam && o.rpc == "score") throw std::invalid_argument("--beam applies to translate only");
  return o;
}

}  // namespace normserve::bench
