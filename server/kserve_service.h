// The Open Inference Protocol (KServe v2, inference.GRPCInferenceService) on gRPC's callback
// API. It is a front end of normserve.v1, not a second server: every inference, model and
// repository call becomes the normserve.v1 call it means (server/kserve_tensors.h) and goes
// to NormServe over the server's in-process channel, with the caller's bearer token, deadline
// and cancellation. So tokens and scopes, request limits, the tokenizer threads, the
// batcher's priorities and deadlines, variant groups, metrics and status codes are exactly
// normserve.v1's. Only the health calls (ServerLive, ServerReady, ModelReady, ServerMetadata)
// are answered here, without a token, as grpc.health.v1 is.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "inference/grpc_service.grpc.pb.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "server/model_repository_fwd.h"

namespace normserve {

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit KServeService(ModelRepository* repository);

  // The channel to NormServe inside this process (grpc::Server::InProcessChannel); calls that
  // arrive before it is set are UNAVAILABLE.
  void Connect(const std::shared_ptr<grpc::Channel>& channel);
  // From now on the server and its models are not ready.
  void StartDraining() { draining_ = true; }

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;

  class InferStream;  // ModelStreamInfer's reactor (kserve_service.cc)

 private:
  // The NormServe stub, or null before Connect.
  std::shared_ptr<v1::NormServe::Stub> backend() const;
  // Whether `name` (a model or group) serves `version` (0: the newest), and its architecture.
  bool Serves(const std::string& name, int64_t version, bool* is_mt) const;

  ModelRepository* const repository_;
  std::atomic<bool> draining_{false};
  mutable std::mutex backend_mutex_;  // guards backend_
  std::shared_ptr<v1::NormServe::Stub> backend_;
};

}  // namespace normserve
