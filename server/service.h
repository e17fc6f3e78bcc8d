// normserve.v1.NormServe on gRPC's callback API: checks each request, runs it on the
// worker pool, maps library errors to status codes and records the request metrics.
#pragma once

#include "normserve/v1/normserve.grpc.pb.h"

namespace normserve {

class Metrics;
class ModelRepository;
class WorkerPool;

class NormServeService final : public v1::NormServe::CallbackService {
 public:
  NormServeService(ModelRepository* repository, Metrics* metrics, WorkerPool* workers);

  grpc::ServerUnaryReactor* Translate(grpc::CallbackServerContext* context,
                                      const v1::TranslateRequest* request,
                                      v1::TranslateResponse* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;

 private:
  ModelRepository* repository_;
  Metrics* metrics_;
  WorkerPool* workers_;
};

}  // namespace normserve
