// A running normserved: the model repository and its batchers, the gRPC server (NormServe,
// the Open Inference Protocol, health, reflection unless tokens are configured), the Open
// Inference Protocol's HTTP port when asked for, and the metrics endpoint. main() and the
// tests both use it.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "server/model_repository_fwd.h"
#include "server/options.h"

namespace grpc {
class Server;
}

namespace normserve {

class Authorizer;
class KServeHttpEndpoint;
class KServeService;
class Metrics;
class NormServeService;
class WorkerPool;

class NormServer {
 public:
  // Loads the repository and starts listening; throws std::runtime_error when it cannot.
  explicit NormServer(const ServerOptions& options);
  ~NormServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const;
  // The Open Inference Protocol's HTTP port; 0 without --http-address.
  int http_port() const;
  ModelRepository& repository() { return *repository_; }
  void Wait();
  // The graceful stop: health NOT_SERVING, new calls UNAVAILABLE, queued and running calls
  // finish within the grace period. Returns when done; Wait() then returns too.
  void Shutdown();

 private:
  void SetHealth(const std::string& name, bool serving);

  const ServerOptions options_;
  std::unique_ptr<Authorizer> authorizer_;  // first: a refused start loads no model
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<WorkerPool> management_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<NormServeService> service_;
  std::unique_ptr<KServeService> kserve_;
  std::mutex health_mutex_;
  std::unique_ptr<grpc::Server> server_;
  int grpc_port_ = 0;
  std::unique_ptr<KServeHttpEndpoint> http_;  // after server_: its calls go through it
  std::once_flag shutdown_once_;
};

}  // namespace normserve
