#include "client/bench/options.h"

#include <CLI/CLI.hpp>
#include <stdexcept>

#include "client/channel_flags.h"
#include "common/command_line.h"

namespace normserve::bench {
namespace {

constexpr char kDescription[] =
    R"(A load generator for normserved. Each step runs a warmup, then measures for a fixed time or
request count, and prints one row: throughput (OK responses/s and tokens/s), p50/p90/p99
latency of the OK responses (nearest-rank percentiles, in ms), and the count of each gRPC
status code.

Load tests send as many requests as the server takes: point this only at loopback or at
hosts you run yourself. Requests go to the --server address and nowhere else.)";

constexpr char kFooter[] =
    R"(Tokens are the pieces of the best hypothesis for translate (requested with return_tokens)
and the scored tokens, </s> included, for score. Every flag can also come from its
environment variable (shown as env); a flag wins. Exit status: 0 on success, 1 when the
server is unreachable or rejects the model or the first request (the gRPC status name and
message go to stderr), 2 on a usage error, 130 when interrupted (the finished steps are
still written).)";

// Checks between flags and the defaults that depend on them, after parsing.
void CheckAndComplete(BenchOptions* o) {
  client::CheckChannelTls(o->tls);
  if (!o->concurrency.empty() && !o->rates.empty()) {
    throw std::invalid_argument("give --concurrency or --rate, not both");
  }
  if (o->duration_s && o->requests) {
    throw std::invalid_argument("give --duration-secs or --requests, not both");
  }
  if (o->concurrency.empty() && o->rates.empty()) o->concurrency = {1, 4, 16, 64};
  if (!o->duration_s && !o->requests) o->duration_s = 10;
  if (o->beam && o->rpc == "score") throw std::invalid_argument("--beam applies to translate only");
}

// Sets FIELD only when the flag is given: the defaults of the exclusive pairs depend on which.
template <typename T>
CLI::Option* AddOptional(CLI::App* app, const std::string& flag, std::optional<T>* field,
                         const std::string& description) {
  return app->add_option_function<T>(
      flag, [field](const T& value) { *field = value; }, description);
}

}  // namespace

std::optional<int> ParseBenchOptions(int argc, const char* const* argv, BenchOptions* o) {
  CLI::App app(kDescription, "normserve-bench");
  command_line::Configure(&app);
  app.footer(kFooter);
  app.add_option("--server", o->server, "normserved's gRPC address: loopback, or a host you run")
      ->type_name("ADDR")
      ->required();
  app.add_option("--model", o->model, "the model to load")->type_name("M")->required();

  const std::string steps = "Steps (one of; default --concurrency 1,4,16,64)";
  app.add_option("--concurrency", o->concurrency,
                 "closed loop: C workers, each with one request in flight at a time;\n"
                 "throughput counts the responses that complete inside the window")
      ->type_name("C[,C...]")
      ->delimiter(',')
      ->check(command_line::NumberIn(1, 4096))
      ->group(steps);
  app.add_option("--rate", o->rates,
                 "open loop: Poisson arrivals at R requests/s, each sent at its scheduled\n"
                 "time whatever is outstanding; latency runs from the scheduled time, so\n"
                 "queueing in the server or client shows")
      ->type_name("R[,R...]")
      ->delimiter(',')
      ->check(command_line::NumberIn(0.001, 1e6))
      ->group(steps);
  app.add_option("--max-outstanding", o->max_outstanding,
                 "open loop: arrivals while N requests are in flight are not sent and count\n"
                 "as dropped")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1'000'000))
      ->group(steps);

  const std::string length = "Length of a step (one of; default --duration-secs 10)";
  AddOptional(&app, "--duration-secs", &o->duration_s, "measure for S seconds")
      ->type_name("S")
      ->check(command_line::NumberIn(0.001, 86400))
      ->group(length);
  AddOptional(&app, "--requests", &o->requests, "measure N requests")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1'000'000'000))
      ->group(length);
  app.add_option("--warmup-secs", o->warmup_s, "unmeasured load before each step")
      ->type_name("S")
      ->check(command_line::NumberIn(0, 3600))
      ->group(length);

  const std::string requests = "Requests";
  app.add_option("--rpc", o->rpc,
                 "default: translate for transformer_mt models, score for transformer_lm\n"
                 "models (the server's GetModel says which)")
      ->type_name("RPC")
      ->check(CLI::IsMember({"translate", "score"}))
      ->group(requests);
  app.add_option("--texts", o->texts_path,
                 "one text per line, sent in turn (default: ~50 built-in short sentences,\n"
                 "German for translation, English for language models); scoring a\n"
                 "translation model needs SOURCE<TAB>TARGET lines")
      ->type_name("FILE")
      ->group(requests);
  app.add_option("--batch", o->batch, "texts per request")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1024))
      ->group(requests);
  AddOptional(&app, "--beam", &o->beam, "beam size for translate (default: the server's)")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 64))
      ->group(requests);
  app.add_option("--timeout-ms", o->timeout_ms, "deadline of each request")
      ->type_name("MS")
      ->check(command_line::NumberIn(1, 3'600'000))
      ->group(requests);
  app.add_option("--connections", o->connections, "spread requests over N HTTP/2 connections")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 256))
      ->group(requests);
  app.add_option("--seed", o->seed, "seed of the open loop's arrival times")
      ->type_name("N")
      ->check(command_line::NumberIn(0, static_cast<double>(int64_t{1} << 53)))
      ->group(requests);
  app.add_option("--token-file", o->token_file,
                 "a file holding the bearer token that servers with --auth-tokens-file\n"
                 "need (sent as \"authorization: Bearer TOKEN\")")
      ->type_name("F")
      ->group(requests);

  const std::string output = "Output";
  app.add_option("--json", o->json_path, "parameters and one object per step (the list \"steps\")")
      ->type_name("FILE")
      ->group(output);
  app.add_option("--csv", o->csv_path, "one row per step")->type_name("FILE")->group(output);
  client::AddChannelTlsOptions(&app, &o->tls);
  command_line::AddEnvironmentFallbacks("normserve-bench", &app);

  return command_line::Parse(&app, argc, argv, [&] { CheckAndComplete(o); });
}

}  // namespace normserve::bench
