// normserved's command line (DESIGN.md section 8).
#pragma once

#include <optional>
#include <string>

#include "models/served_model.h"
#include "server/batcher.h"
#include "server/service.h"
#include "server/tls.h"

namespace normserve {

struct ServerOptions {
  std::string model_repository;
  std::string grpc_address = "0.0.0.0:50051";
  TlsOptions tls;                                  // the gRPC port's TLS (none by default)
  std::string metrics_address = "127.0.0.1:9464";  // private by default; empty: none
  std::string http_address;                        // Open Inference Protocol HTTP; empty: off
  std::string device = "cpu";
  ModelControl model_control = ModelControl::kNone;
  double repository_poll_secs = 5;
  double shutdown_grace_secs = 30;
  // Defaults for models whose model.json does not say, --threads and --instances included.
  BatcherConfig batching;
  RequestLimits limits;                   // texts per request and bytes per text (memory: batching)
  int64_t max_message_bytes = 4 << 20;    // largest request message gRPC accepts
  int64_t max_metadata_bytes = 16 << 10;  // request headers (metadata) together
  int max_concurrent_streams = 100;       // calls at once on one client connection
  int tokenizer_threads = 2;              // threads that check and tokenize requests
  // Bearer tokens (server/auth.h); empty: no authentication, every caller has scope infer.
  std::string auth_tokens_file;
  // Without a tokens file: every caller has scope admin too (LoadModel, UnloadModel, paths).
  bool allow_unauthenticated_admin = false;
  // Serve gRPC reflection although tokens are configured (it cannot check them).
  bool enable_reflection = false;
};

// Parses argv into *options (flags, else their NORMSERVED_* environment variables). Returns
// the status to exit with when normserved is done: 0 after --help or --version, 2 after a
// usage error (printed on stderr); nullopt when it goes on to serve.
std::optional<int> ParseServerOptions(int argc, const char* const* argv, ServerOptions* options);

}  // namespace normserve
