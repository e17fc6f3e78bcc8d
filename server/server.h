// A running normserved: the model repository, the gRPC server (NormServe, health,
// reflection) and the metrics endpoint. main() and the integration tests both use it.
#pragma once

#include <memory>
#include <mutex>

#include "server/options.h"

namespace grpc {
class Server;
}

namespace normserve {

class Metrics;
class ModelRepository;
class NormServeService;
class WorkerPool;

class NormServer {
 public:
  // Loads the repository and starts listening; throws std::runtime_error when it cannot.
  explicit NormServer(const ServerOptions& options);
  ~NormServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const;
  void Wait();
  // Stops accepting calls, lets running ones finish, and returns. Wait() then returns too.
  void Shutdown();

 private:
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<NormServeService> service_;
  std::unique_ptr<grpc::Server> server_;
  int grpc_port_ = 0;
  std::once_flag shutdown_once_;
};

}  // namespace normserve
