// normserve.v1.NormServe on gRPC's callback API, the protocol front end: it checks each
// request, resolves the model, and hands the call to that model's batcher. Model work never
// runs on gRPC's threads.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "models/served_model.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "server/auth.h"
#include "server/calls.h"
#include "server/model_repository_fwd.h"

namespace normserve {

class ShadowTraffic;

class Metrics;
class WorkerPool;

enum class ModelControl { kNone, kPoll, kExplicit };

class NormServeService final : public v1::NormServe::CallbackService {
 public:
  // `limits` bound every request (memory_budget_bytes comes from each model's batcher);
  // `tokenizer_threads` check and tokenize requests; `authorizer` checks every call's token
  // before anything else.
  NormServeService(ModelRepository* repository, Metrics* metrics, ModelControl control,
                   WorkerPool* management, const RequestLimits& limits, int tokenizer_threads,
                   Authorizer* authorizer);
  ~NormServeService() override;

  // From now on every new call gets UNAVAILABLE, requests still waiting to be tokenized are
  // answered so, and model work still running at `abandon_at` stops within one step with
  // UNAVAILABLE. Returns once no request is being tokenized.
  void StartDraining(Clock::time_point abandon_at);

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
  // Authorizes an inference call (scope infer), resolves its model and tokenizes it off
  // gRPC's threads: `prepare(model, priority, limits, shadows)` checks and tokenizes the
  // request and returns the call, which then waits in the model's batcher; `shadows` are the
  // shadow members that get a copy once it is answered. `refuse(status, model)`
  // answers a call that never became one.
  template <typename Prepare, typename Refuse>
  void Infer(grpc::CallbackServerContext* context, const std::string& model, int64_t version,
             uint32_t priority, Prepare prepare, Refuse refuse);
  // Runs `task` on the tokenizer threads; false when too many requests already wait.
  bool SubmitTokenizing(std::function<void()> task);
  grpc::Status CheckManagement(const std::string& model) const;
  // The caller's token against `scope` (server/auth.h); *admin: whether it holds admin.
  grpc::Status Authorize(const grpc::CallbackServerContext& context, Scope scope,
                         bool* admin = nullptr) const;

  ModelRepository* const repository_;
  Metrics* const metrics_;
  const ModelControl control_;
  WorkerPool* const management_;
  Authorizer* const authorizer_;
  const RequestLimits limits_;
  ShutdownDeadline shutdown_;
  const CallEnvironment env_;
  std::atomic<bool> draining_{false};
  std::mutex tokenizer_mutex_;  // guards tokenizer_: StartDraining takes it away
  std::unique_ptr<WorkerPool> tokenizer_;
  std::unique_ptr<ShadowTraffic> shadow_traffic_;
};

}  // namespace normserve
