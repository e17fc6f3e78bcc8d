#include "server/options.h"

#include <CLI/CLI.hpp>
#include <stdexcept>

#include "common/command_line.h"
#include "models/compute.h"

namespace normserve {
namespace {

constexpr char kDescription[] =
    R"(Serves the models of a repository (DIR/<model>/<version>/config.json ...) over gRPC
(normserve.v1.NormServe, grpc.health.v1.Health, server reflection) and exports Prometheus
metrics at http://<metrics-address>/metrics. SIGTERM/SIGINT: health turns NOT_SERVING, new
calls get UNAVAILABLE, queued and running calls finish within the grace period, exit 0.)";

constexpr char kFooter[] =
    R"(Every flag can also come from its environment variable (shown as env), e.g.
NORMSERVED_MODEL_REPOSITORY=/models; a flag on the command line wins.
Exit status: 0 after a clean shutdown, 1 when the server cannot start, 2 on a usage error,
3 when the --device it names is not present.)";

// Checks between flags, after parsing.
void CheckTogether(const ServerOptions& o) {
  if (o.allow_unauthenticated_admin && !o.auth_tokens_file.empty()) {
    throw std::invalid_argument(
        "--allow-unauthenticated-admin is for servers without --auth-tokens-file; with tokens, "
        "add an \"admin TOKEN\" line to the file instead");
  }
  if (o.tls.cert_file.empty() != o.tls.key_file.empty()) {
    throw std::invalid_argument("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!o.tls.client_ca_file.empty() && o.tls.cert_file.empty()) {
    throw std::invalid_argument(
        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first");
  }
}

}  // namespace

std::optional<int> ParseServerOptions(int argc, const char* const* argv, ServerOptions* o) {
  CLI::App app(kDescription, "normserved");
  command_line::Configure(&app);
  app.footer(kFooter);

  app.add_option("--model-repository", o->model_repository, "the model repository")
      ->type_name("DIR")
      ->required();
  app.add_option("--grpc-address", o->grpc_address, "gRPC listen address (port 0 picks one)")
      ->type_name("ADDR");
  app.add_option("--metrics-address", o->metrics_address,
                 "metrics listen address, plain HTTP (reachable from this host only by\n"
                 "default; 0.0.0.0:9464 exposes it on purpose, behind a firewall or\n"
                 "NetworkPolicy; \"\" disables)")
      ->type_name("ADDR");
  app.add_option("--http-address", o->http_address,
                 "the Open Inference Protocol (KServe v2) over HTTP/REST on ADDR, e.g.\n"
                 "127.0.0.1:8000 (default: off; its gRPC form is always served on\n"
                 "--grpc-address)")
      ->type_name("ADDR");
  app.add_option("--threads", o->batching.threads,
                 "intra-op threads of each model instance (README \"Threads\")")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1024));
  app.add_option("--instances", o->batching.instances,
                 "model instances: each runs its own batches on its own thread (README\n"
                 "\"Threads\")")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 64));
  app.add_option("--device", o->device, "cpu, or cuda[:N] with a CUDA LibTorch build")
      ->type_name("DEVICE")
      ->check(CLI::Validator(CheckComputeDeviceName, "cpu|cuda[:N]"));
  std::string model_control = "none";
  app.add_option("--model-control", model_control,
                 "none: load every model at start\n"
                 "poll: also watch the repository for new, changed and removed versions\n"
                 "      and models\n"
                 "explicit: also accept LoadModel/UnloadModel RPCs")
      ->type_name("MODE")
      ->check(CLI::IsMember({"none", "poll", "explicit"}));
  app.add_option("--repository-poll-secs", o->repository_poll_secs, "poll interval")
      ->type_name("S")
      ->check(command_line::NumberIn(0.05, 86400.0));
  app.add_option("--shutdown-grace-secs", o->shutdown_grace_secs,
                 "how long queued and running calls may take to finish after SIGTERM")
      ->type_name("S")
      ->check(command_line::NumberIn(0.0, 86400.0));

  const std::string batching = "Batching defaults, for models whose model.json does not set them";
  int64_t max_queue_delay_us = o->batching.max_queue_delay.count();
  int64_t memory_budget_mb = o->batching.memory_budget_bytes >> 20;
  app.add_option("--max-batch-size", o->batching.max_batch_size,
                 "requests per batch and running together")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1024))
      ->group(batching);
  app.add_option("--max-batch-tokens", o->batching.max_batch_tokens, "tokens per batch")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 20))
      ->group(batching);
  app.add_option("--max-queue-delay-us", max_queue_delay_us,
                 "how long a request waits for partners")
      ->type_name("N")
      ->check(command_line::NumberIn(0, 10'000'000))
      ->group(batching);
  app.add_option("--max-queue-size", o->batching.max_queue_size,
                 "queued requests per model before RESOURCE_EXHAUSTED")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 20))
      ->group(batching);
  app.add_option("--memory-budget-mb", memory_budget_mb,
                 "memory of one model call: larger batches run as several calls; a text that\n"
                 "alone needs more is INVALID_ARGUMENT")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 20))
      ->group(batching);

  const std::string limits =
      "Request limits (INVALID_ARGUMENT beyond them, checked before tokenizing)";
  app.add_option("--max-texts-per-request", o->limits.max_texts, "texts or pairs per request")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 16))
      ->group(limits);
  app.add_option("--max-text-bytes", o->limits.max_text_bytes,
                 "bytes per text (0: 64 per position of the model, i.e. 16384 for\n"
                 "max_positions 256)")
      ->type_name("N")
      ->check(command_line::NumberIn(0, 1 << 26))
      ->group(limits);
  app.add_option("--max-tokens-per-request", o->limits.max_tokens,
                 "tokens of a request's texts together")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 24))
      ->group(limits);
  app.add_option("--max-message-bytes", o->max_message_bytes,
                 "largest request message (RESOURCE_EXHAUSTED beyond it)")
      ->type_name("N")
      ->check(command_line::NumberIn(1024, 1 << 30))
      ->group(limits);
  app.add_option("--max-metadata-bytes", o->max_metadata_bytes,
                 "request metadata (headers) together")
      ->type_name("N")
      ->check(command_line::NumberIn(1024, 1 << 20))
      ->group(limits);
  app.add_option("--max-concurrent-streams", o->max_concurrent_streams,
                 "calls at once on one client connection")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 1 << 16))
      ->group(limits);
  app.add_option("--tokenizer-threads", o->tokenizer_threads,
                 "threads that check and tokenize requests off gRPC's threads")
      ->type_name("N")
      ->check(command_line::NumberIn(1, 64))
      ->group(limits);

  const std::string tls = "TLS on the gRPC port (default: plaintext)";
  app.add_option("--tls-cert", o->tls.cert_file,
                 "PEM certificate chain of the server (with --tls-key)")
      ->type_name("FILE")
      ->group(tls);
  app.add_option("--tls-key", o->tls.key_file, "PEM private key of --tls-cert, unencrypted")
      ->type_name("FILE")
      ->group(tls);
  app.add_option("--tls-client-ca", o->tls.client_ca_file,
                 "mutual TLS: clients must present a certificate signed by a CA in FILE\n"
                 "(needs --tls-cert and --tls-key)")
      ->type_name("FILE")
      ->group(tls);
  app.add_option("--tls-refresh-secs", o->tls.refresh_secs,
                 "re-read the three files every S seconds, so replaced certificates take\n"
                 "effect without a restart")
      ->type_name("S")
      ->check(command_line::NumberIn(1, 86400))
      ->group(tls);

  const std::string auth = "Authentication (README \"Security\")";
  app.add_option("--auth-tokens-file", o->auth_tokens_file,
                 "bearer tokens, one \"scope token\" a line (scope infer or admin; admin also\n"
                 "has infer), re-read when the file changes: every RPC but health then needs\n"
                 "the metadata \"authorization: Bearer TOKEN\". Without it every caller has\n"
                 "infer (logged as a warning at start)")
      ->type_name("FILE")
      ->check(CLI::Validator(
          [](const std::string& value) {
            return value.empty() ? std::string("needs a file name") : std::string();
          },
          ""))
      ->group(auth);
  app.add_flag("--allow-unauthenticated-admin", o->allow_unauthenticated_admin,
               "without --auth-tokens-file: every caller has admin too (LoadModel,\n"
               "UnloadModel, model paths), for local use; needed by --model-control\n"
               "explicit when there is no admin token")
      ->group(auth);
  app.add_flag("--enable-reflection", o->enable_reflection,
               "serve gRPC reflection with --auth-tokens-file too (reflection cannot check\n"
               "tokens; without a tokens file it is always served)")
      ->group(auth);
  command_line::AddEnvironmentFallbacks("normserved", &app);

  return command_line::Parse(&app, argc, argv, [&] {
    o->model_control = model_control == "poll"       ? ModelControl::kPoll
                       : model_control == "explicit" ? ModelControl::kExplicit
                                                     : ModelControl::kNone;
    o->batching.max_queue_delay = std::chrono::microseconds(max_queue_delay_us);
    o->batching.memory_budget_bytes = memory_budget_mb << 20;
    CheckTogether(*o);
  });
}

}  // namespace normserve
