#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <stdexcept>

#include "server/log.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/service.h"
#include "server/worker_pool.h"

namespace normserve {
namespace {

constexpr char kServiceName[] = "normserve.v1.NormServe";
// Model work runs here; LibTorch parallelizes inside each call with its own threads.
constexpr int kWorkerThreads = 2;

}  // namespace

NormServer::NormServer(const ServerOptions& options)
    : metrics_(std::make_unique<Metrics>(options.metrics_address)),
      repository_(std::make_unique<ModelRepository>(options.model_repository, metrics_.get())),
      workers_(std::make_unique<WorkerPool>(kWorkerThreads)) {
  repository_->LoadAll();
  service_ = std::make_unique<NormServeService>(repository_.get(), metrics_.get(), workers_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_address, grpc::InsecureServerCredentials(), &grpc_port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || grpc_port_ == 0) {
    throw std::runtime_error("cannot listen for gRPC on " + options.grpc_address);
  }
  const bool serving = repository_->ready_count() > 0;
  server_->GetHealthCheckService()->SetServingStatus(serving);
  server_->GetHealthCheckService()->SetServingStatus(kServiceName, serving);
  LogInfo("normserved listening for gRPC on port " + std::to_string(grpc_port_) +
          ", metrics on port " + std::to_string(metrics_port()) + ", " +
          std::to_string(repository_->ready_count()) + " model(s) ready");
}

NormServer::~NormServer() { Shutdown(); }

int NormServer::metrics_port() const { return metrics_->port(); }

void NormServer::Wait() { server_->Wait(); }

void NormServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    server_->GetHealthCheckService()->Shutdown();
    // Returns once every call in flight has finished; the workers finish queued ones.
    server_->Shutdown();
  });
}

}  // namespace normserve
