#include "server/options.h"

#include <cmath>
#include <stdexcept>

#include "models/compute.h"

namespace normserve {
namespace {

constexpr char kUsage[] = R"(usage: normserved --model-repository DIR [options]

Serves the models of DIR (DIR/<model>/<version>/config.json ...) over gRPC
(normserve.v1.NormServe, grpc.health.v1.Health, server reflection) and exports Prometheus
metrics at http://<metrics-address>/metrics. SIGTERM/SIGINT: health turns NOT_SERVING, new
calls get UNAVAILABLE, queued and running calls finish within the grace period, exit 0.

  --model-repository DIR      the model repository (required)
  --grpc-address ADDR         gRPC listen address (default 0.0.0.0:50051; port 0 picks one)
  --metrics-address ADDR      metrics listen address, plain HTTP (default 127.0.0.1:9464,
                              reachable from this host only; 0.0.0.0:9464 exposes it on
                              purpose, behind a firewall or NetworkPolicy; "" disables)
  --threads N                 LibTorch intra-op threads (default 1; README "Threads")
  --device DEVICE             cpu (default), or cuda[:N] with a CUDA LibTorch build
  --model-control MODE        none: load every model at start (default)
                              poll: also watch the repository for new, changed and removed
                                    versions and models
                              explicit: also accept LoadModel/UnloadModel RPCs
  --repository-poll-secs S    poll interval (default 5)
  --shutdown-grace-secs S     how long queued and running calls may take to finish after
                              SIGTERM (default 30)
Batching defaults, for models whose model.json does not set them:
  --max-batch-size N          requests per batch and running together (default 64)
  --max-batch-tokens N        tokens per batch (default 4096)
  --max-queue-delay-us N      how long a request waits for partners (default 2000)
  --max-queue-size N          queued requests per model before RESOURCE_EXHAUSTED (default 256)
  --memory-budget-mb N        memory of one model call (default 1024): larger batches run as
                              several calls; a text that alone needs more is INVALID_ARGUMENT
Request limits (INVALID_ARGUMENT beyond them, checked before tokenizing):
  --max-texts-per-request N   texts or pairs per request (default 1024)
  --max-text-bytes N          bytes per text (default 0: 64 per position of the model, i.e.
                              16384 for max_positions 256)
  --max-tokens-per-request N  tokens of a request's texts together (default 65536)
  --max-message-bytes N       largest request message (default 4194304; RESOURCE_EXHAUSTED)
  --max-metadata-bytes N      request metadata (headers) together (default 16384)
  --max-concurrent-streams N  calls at once on one client connection (default 100)
  --tokenizer-threads N       threads that check and tokenize requests off gRPC's threads
                              (default 2)
TLS on the gRPC port (default: plaintext):
  --tls-cert FILE             PEM certificate chain of the server (with --tls-key)
  --tls-key FILE              PEM private key of --tls-cert, unencrypted
  --tls-client-ca FILE        mutual TLS: clients must present a certificate signed by a CA in
                              FILE (needs --tls-cert and --tls-key)
  --tls-refresh-secs S        re-read the three files every S seconds, so replaced
                              certificates take effect without a restart (default 60)
Authentication (README "Security"):
  --auth-tokens-file F        bearer tokens, one "scope token" a line (scope infer or admin;
                              admin also has infer), re-read when the file changes: every RPC
                              but health then needs the metadata "authorization: Bearer TOKEN".
                              Without it every caller has infer (logged as a warning at start)
  --allow-unauthenticated-admin
                              without --auth-tokens-file: every caller has admin too
                              (LoadModel, UnloadModel, model paths), for local use; needed by
                              --model-control explicit when there is no admin token
  --enable-reflection         serve gRPC reflection with --auth-tokens-file too (reflection
                              cannot check tokens; without a tokens file it is always served)
  --help                      this text
)";

double Number(const std::string& flag, const std::string& value, double min, double max) {
  double v = NAN;
  size_t used = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || !(v >= min && v <= max)) {
    throw std::invalid_argument(flag + " must be a number in " + std::to_string(min) + ".." +
                                std::to_string(max) + ", got '" + value + "'");
  }
  return v;
}

int64_t Integer(const std::string& flag, const std::string& value, int64_t min, int64_t max) {
  const double v = Number(flag, value, static_cast<double>(min), static_cast<double>(max));
  if (v != std::floor(v)) throw std::invalid_argument(flag + " must be an integer");
  return static_cast<int64_t>(v);
}

}  // namespace

bool ParseServerOptions(const std::vector<std::string>& args, ServerOptions* o, std::string* help) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    const bool has_inline = flag.find('=') != std::string::npos;
    if (has_inline) {
      value = flag.substr(flag.find('=') + 1);
      flag = flag.substr(0, flag.find('='));
    }
    if (flag == "--help" || flag == "-h") {
      *help = kUsage;
      return false;
    }
    if (flag == "--allow-unauthenticated-admin" || flag == "--enable-reflection") {
      if (has_inline) throw std::invalid_argument(flag + " takes no value");
      (flag == "--enable-reflection" ? o->enable_reflection : o->allow_unauthenticated_admin) =
          true;
      continue;
    }
    if (!has_inline) {
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value\n\n" + kUsage);
      value = args[++i];
    }
    if (flag == "--model-repository") {
      o->model_repository = value;
    } else if (flag == "--grpc-address") {
      o->grpc_address = value;
    } else if (flag == "--tls-cert") {
      o->tls.cert_file = value;
    } else if (flag == "--tls-key") {
      o->tls.key_file = value;
    } else if (flag == "--tls-client-ca") {
      o->tls.client_ca_file = value;
    } else if (flag == "--tls-refresh-secs") {
      o->tls.refresh_secs = static_cast<int>(Integer(flag, value, 1, 86400));
    } else if (flag == "--metrics-address") {
      o->metrics_address = value;
    } else if (flag == "--threads") {
      o->threads = static_cast<int>(Integer(flag, value, 1, 1024));
    } else if (flag == "--device") {
      if (const std::string why = CheckComputeDeviceName(value); !why.empty()) {
        throw std::invalid_argument("--device " + value + ": " + why);
      }
      o->device = value;
    } else if (flag == "--model-control") {
      if (value == "none")
        o->model_control = ModelControl::kNone;
      else if (value == "poll")
        o->model_control = ModelControl::kPoll;
      else if (value == "explicit")
        o->model_control = ModelControl::kExplicit;
      else
        throw std::invalid_argument("--model-control must be none, poll or explicit");
    } else if (flag == "--repository-poll-secs") {
      o->repository_poll_secs = Number(flag, value, 0.05, 86400);
    } else if (flag == "--shutdown-grace-secs") {
      o->shutdown_grace_secs = Number(flag, value, 0, 86400);
    } else if (flag == "--max-batch-size") {
      o->batching.max_batch_size = Integer(flag, value, 1, 1024);
    } else if (flag == "--max-batch-tokens") {
      o->batching.max_batch_tokens = Integer(flag, value, 1, 1 << 20);
    } else if (flag == "--max-queue-delay-us") {
      o->batching.max_queue_delay = std::chrono::microseconds(Integer(flag, value, 0, 10'000'000));
    } else if (flag == "--max-queue-size") {
      o->batching.max_queue_size = Integer(flag, value, 1, 1 << 20);
    } else if (flag == "--memory-budget-mb") {
      o->batching.memory_budget_bytes = Integer(flag, value, 1, 1 << 20) << 20;
    } else if (flag == "--max-texts-per-request") {
      o->limits.max_texts = Integer(flag, value, 1, 1 << 16);
    } else if (flag == "--max-text-bytes") {
      o->limits.max_text_bytes = Integer(flag, value, 0, 1 << 26);
    } else if (flag == "--max-tokens-per-request") {
      o->limits.max_tokens = Integer(flag, value, 1, 1 << 24);
    } else if (flag == "--max-message-bytes") {
      o->max_message_bytes = Integer(flag, value, 1024, 1 << 30);
    } else if (flag == "--max-metadata-bytes") {
      o->max_metadata_bytes = Integer(flag, value, 1024, 1 << 20);
    } else if (flag == "--max-concurrent-streams") {
      o->max_concurrent_streams = static_cast<int>(Integer(flag, value, 1, 1 << 16));
    } else if (flag == "--tokenizer-threads") {
      o->tokenizer_threads = static_cast<int>(Integer(flag, value, 1, 64));
    } else if (flag == "--auth-tokens-file") {
      if (value.empty()) throw std::invalid_argument("--auth-tokens-file needs a file name");
      o->auth_tokens_file = value;
    } else {
      throw std::invalid_argument("unknown flag " + flag + "\n\n" + kUsage);
    }
  }
  if (o->model_repository.empty()) {
    throw std::invalid_argument(std::string("--model-repository is required\n\n") + kUsage);
  }
  if (o->allow_unauthenticated_admin && !o->auth_tokens_file.empty()) {
    throw std::invalid_argument(
        "--allow-unauthenticated-admin is for servers without --auth-tokens-file; with tokens, "
        "add an \"admin TOKEN\" line to the file instead");
  }
  if (o->tls.cert_file.empty() != o->tls.key_file.empty()) {
    throw std::invalid_argument("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!o->tls.client_ca_file.empty() && o->tls.cert_file.empty()) {
    throw std::invalid_argument(
        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first");
  }
  return true;
}

}  // namespace normserve
