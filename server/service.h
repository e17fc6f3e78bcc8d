// normserve.v1.NormServe on gRPC's callback API, the protocol front end: it checks each
// request, resolves the model, and hands the call to that model's batcher. Model work never
// runs on gRPC's threads.
#pragma once

#include <atomic>

#include "normserve/v1/normserve.grpc.pb.h"
#include "server/model_repository_fwd.h"

namespace normserve {

class Metrics;
class WorkerPool;

enum class ModelControl { kNone, kPoll, kExplicit };

class NormServeService final : public v1::NormServe::CallbackService {
 public:
  NormServeService(ModelRepository* repository, Metrics* metrics, ModelControl control,
                   WorkerPool* management);

  // From now on every new call gets UNAVAILABLE.
  void StartDraining() { draining_ = true; }

  grpc::ServerUnaryReactor* Translate(grpc::CallbackServerContext* context,
                                      const v1::TranslateRequest* request,
                                      v1::TranslateResponse* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const v1::LoadModelRequest* request,
                                      v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        v1::UnloadModelResponse* response) override;

 private:
  template <typename Request, typename Prepare>
  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* context, const char* rpc,
                                  const Request& request, Prepare prepare);
  grpc::Status CheckManagement(const std::string& model) const;

  ModelRepository* const repository_;
  Metrics* const metrics_;
  const ModelControl control_;
  WorkerPool* const management_;
  std::atomic<bool> draining_{false};
};

}  // namespace normserve
