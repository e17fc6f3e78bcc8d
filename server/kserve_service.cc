#include "server/kserve_service.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>

#include "models/served_model.h"
#include "proto/status_names.h"
#include "server/kserve_tensors.h"
#include "server/model_repository.h"
#include "server/names.h"

namespace normserve {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

const grpc::Status kNotConnected(grpc::StatusCode::UNAVAILABLE,
                                 "the server is starting; retry in a moment");

// A normserve.v1 call made for a KServe call carries that call's bearer token and deadline
// (the earlier of it and `timeout`).
void Inherit(const grpc::CallbackServerContext& from, grpc::ClientContext* to,
             std::optional<std::chrono::microseconds> timeout = std::nullopt) {
  const auto [first, last] = from.client_metadata().equal_range("authorization");
  for (auto it = first; it != last; ++it) {
    to->AddMetadata("authorization", std::string(it->second.data(), it->second.size()));
  }
  auto deadline = from.deadline();
  if (timeout) {
    deadline = std::min(
        deadline, std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(*timeout));
  }
  to->set_deadline(deadline);
}

// A unary KServe call answered by one normserve.v1 call: the client side's state lives here,
// and a cancelled KServe call cancels its normserve.v1 call.
class Hop : public grpc::ServerUnaryReactor {
 public:
  explicit Hop(const grpc::CallbackServerContext& server) { Inherit(server, &client); }
  void OnCancel() override { client.TryCancel(); }
  void OnDone() override { delete this; }

  grpc::ClientContext client;
};

template <typename Request, typename Response>
class HopOf final : public Hop {
 public:
  using Hop::Hop;
  Request request;
  Response response;
};

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context, const grpc::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

void MarkFinal(bool final, ModelInferResponse* response) {
  (*response->mutable_parameters())["triton_final_response"].set_bool_param(final);
}

// One ModelInferRequest run as its normserve.v1 call on `client` (owned by the caller, alive
// until `done`). `done(status, response)` is called once at the end; a streamed Generate
// first sends each piece of text to `piece`.
class InferRun {
 public:
  using Piece = std::function<void(ModelInferResponse)>;
  using Done = std::function<void(const grpc::Status&, ModelInferResponse)>;

  // `is_mt`: the model's architecture, when it serves.
  static void Start(v1::NormServe::Stub* stub, grpc::ClientContext* client,
                    const ModelInferRequest& request, std::optional<bool> is_mt, bool streaming,
                    Piece piece, Done done);
};

// Streams a Generate call's pieces, or gathers them into one text.
class GenerateReader final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateReader(const ModelInferRequest& request, kserve::InferPlan plan, bool streaming,
                 InferRun::Piece piece, InferRun::Done done)
      : id_(request.id()),
        plan_(std::move(plan)),
        streaming_(streaming),
        piece_(std::move(piece)),
        done_(std::move(done)) {}

  void Start(v1::NormServe::Stub* stub, grpc::ClientContext* client) {
    stub->async()->Generate(client, &plan_.generate, this);
    StartRead(&message_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (!message_.finish_reason().empty()) {
      last_ = message_;
    } else if (streaming_) {
      ModelInferResponse response;
      response.set_id(id_);
      response.set_model_name(message_.model().empty() ? plan_.generate.model() : message_.model());
      kserve::FillGenerateOutputs(message_.text(), nullptr, {}, &response);
      MarkFinal(false, &response);
      piece_(std::move(response));
    } else {
      text_ += message_.text();
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    ModelInferResponse response;
    grpc::Status result = status;
    if (status.ok()) {
      response.set_id(id_);
      response.set_model_name(last_.model());
      response.set_model_version(std::to_string(last_.version()));
      result =
          kserve::FillGenerateOutputs(streaming_ ? "" : text_, &last_, plan_.outputs, &response);
    }
    done_(result, std::move(response));
    delete this;
  }

 private:
  const std::string id_;
  kserve::InferPlan plan_;
  const bool streaming_;
  InferRun::Piece piece_;
  InferRun::Done done_;
  v1::GenerateResponse message_;
  v1::GenerateResponse last_;
  std::string text_;
};

template <typename Response, typename Fill>
void CallUnary(v1::NormServe::Stub* stub, grpc::ClientContext* client,
               const ModelInferRequest& request, std::shared_ptr<kserve::InferPlan> plan,
               InferRun::Done done, Fill fill) {
  auto result = std::make_shared<Response>();
  auto finish = [request_id = request.id(), plan, result, done = std::move(done),
                 fill](grpc::Status status) {
    ModelInferResponse response;
    if (status.ok()) {
      response.set_id(request_id);
      response.set_model_name(result->model());
      response.set_model_version(std::to_string(result->version()));
      status = fill(*result, plan->outputs, &response);
    }
    done(status, std::move(response));
  };
  if constexpr (std::is_same_v<Response, v1::TranslateResponse>) {
    stub->async()->Translate(client, &plan->translate, result.get(), std::move(finish));
  } else {
    stub->async()->Score(client, &plan->score, result.get(), std::move(finish));
  }
}

void InferRun::Start(v1::NormServe::Stub* stub, grpc::ClientContext* client,
                     const ModelInferRequest& request, std::optional<bool> is_mt, bool streaming,
                     Piece piece, Done done) {
  auto plan = std::make_shared<kserve::InferPlan>();
  grpc::Status planned = grpc::Status(grpc::StatusCode::NOT_FOUND, "");
  if (is_mt) planned = kserve::PlanInfer(request, *is_mt, streaming, plan.get());
  if (!planned.ok()) {
    // A request that cannot be planned still goes to NormServe, as a Translate call without
    // texts: the token, the model name and its state are checked there and answered exactly
    // as on normserve.v1 (and counted), and only a caller who may use a model that serves
    // learns what is wrong with the request (NormServe's answer is then INVALID_ARGUMENT).
    auto bare = std::make_shared<kserve::InferPlan>();
    bare->translate.set_model(request.model_name());
    bare->translate.set_version(
        std::max<int64_t>(0, kserve::ParseVersion(request.model_version())));
    CallUnary<v1::TranslateResponse>(
        stub, client, request, bare,
        [planned, done = std::move(done)](const grpc::Status& status, ModelInferResponse) {
          const bool ours = status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                            !planned.error_message().empty();
          done(ours ? planned : status, ModelInferResponse());
        },
        kserve::FillTranslateOutputs);
    return;
  }
  if (plan->timeout) {
    // The `timeout` parameter shortens the inherited deadline.
    const auto by_timeout =
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(*plan->timeout);
    client->set_deadline(std::min(client->deadline(), by_timeout));
  }
  switch (plan->task) {
    case kserve::Task::kTranslate:
      return CallUnary<v1::TranslateResponse>(stub, client, request, plan, std::move(done),
                                              kserve::FillTranslateOutputs);
    case kserve::Task::kScore:
      return CallUnary<v1::ScoreResponse>(stub, client, request, plan, std::move(done),
                                          kserve::FillScoreOutputs);
    case kserve::Task::kGenerate: {
      auto* reader = new GenerateReader(request, std::move(*plan), streaming, std::move(piece),
                                        std::move(done));
      reader->Start(stub, client);
      return;
    }
  }
}

std::string StreamError(const grpc::Status& status) {
  return std::string(StatusCodeName(status.error_code())) + ": " + status.error_message();
}

}  // namespace

// ModelStreamInfer: each request runs to its end (a Generate call streams a response per
// piece of text, the last one marked triton_final_response) before the next one is read; a
// failed request is answered with error_message, "CODE: message", and the stream goes on.
class KServeService::InferStream final
    : public grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse> {
 public:
  InferStream(KServeService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      std::lock_guard<std::mutex> lock(mutex_);
      reading_done_ = true;
      FinishIfDoneLocked();
      return;
    }
    const auto stub = service_->backend();
    bool is_mt = false;
    const bool serves = service_->Serves(
        request_.model_name(), std::max<int64_t>(0, kserve::ParseVersion(request_.model_version())),
        &is_mt);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The previous request's context goes one request later: its call has ended, but its
      // callback may still be returning on another thread.
      previous_client_ = std::move(client_);
      client_ = std::make_unique<grpc::ClientContext>();
      Inherit(*context_, client_.get());
      if (cancelled_) client_->TryCancel();
    }
    if (!stub) return Ended(kNotConnected, {});
    InferRun::Start(
        stub.get(), client_.get(), request_, serves ? std::optional<bool>(is_mt) : std::nullopt,
        /*streaming=*/true, [this](ModelInferResponse piece) { Send(std::move(piece)); },
        [this](const grpc::Status& status, ModelInferResponse response) {
          Ended(status, std::move(response));
        });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.pop_front();
    if (!ok) pending_.clear();  // the client is gone; what is left can only be dropped
    if (!pending_.empty()) {
      StartWrite(&pending_.front());
    } else {
      writing_ = false;
      FinishIfDoneLocked();
    }
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mutex_);
    cancelled_ = true;
    if (client_) client_->TryCancel();
  }

  void OnDone() override { delete this; }

 private:
  // The request's last response; then the next request is read.
  void Ended(const grpc::Status& status, ModelInferResponse response) {
    ModelStreamInferResponse message;
    if (status.ok()) {
      MarkFinal(true, &response);
      *message.mutable_infer_response() = std::move(response);
    } else {
      message.set_error_message(StreamError(status));
      message.mutable_infer_response()->set_id(request_.id());
      message.mutable_infer_response()->set_model_name(request_.model_name());
    }
    Send(std::move(message));
    StartRead(&request_);
  }

  void Send(ModelInferResponse piece) {
    ModelStreamInferResponse message;
    *message.mutable_infer_response() = std::move(piece);
    Send(std::move(message));
  }

  void Send(ModelStreamInferResponse message) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back(std::move(message));
    if (!writing_) {
      writing_ = true;
      StartWrite(&pending_.front());
    }
  }

  void FinishIfDoneLocked() {
    if (reading_done_ && !writing_ && !finished_) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  KServeService* const service_;
  grpc::CallbackServerContext* const context_;
  ModelInferRequest request_;  // the one running; read again only once it has ended
  std::mutex mutex_;           // guards what follows
  std::unique_ptr<grpc::ClientContext> client_;
  std::unique_ptr<grpc::ClientContext> previous_client_;
  std::deque<ModelStreamInferResponse> pending_;
  bool writing_ = false;
  bool reading_done_ = false;
  bool cancelled_ = false;
  bool finished_ = false;
};

KServeService::KServeService(ModelRepository* repository) : repository_(repository) {}

void KServeService::Connect(const std::shared_ptr<grpc::Channel>& channel) {
  std::lock_guard<std::mutex> lock(backend_mutex_);
  backend_ = v1::NormServe::NewStub(channel);
}

std::shared_ptr<v1::NormServe::Stub> KServeService::backend() const {
  std::lock_guard<std::mutex> lock(backend_mutex_);
  return backend_;
}

bool KServeService::Serves(const std::string& name, int64_t version, bool* is_mt) const {
  if (draining_) return false;
  ModelRepository::LookupError error;
  std::string message;
  const ServingTarget target = repository_->Resolve(name, version, &error, &message);
  if (!target.model) return false;
  *is_mt = target.model->config().is_mt();
  return true;
}

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* context,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Answer(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* context,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  response->set_ready(!draining_ && repository_->ready_count() > 0);
  return Answer(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* context,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  const int64_t version = kserve::ParseVersion(request->version());
  bool is_mt = false;
  response->set_ready(version >= 0 && Serves(request->name(), version, &is_mt));
  return Answer(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("normserve");
  response->set_version(NORMSERVE_VERSION);
  for (const char* extension :
       {"model_repository", "model_configuration", "binary_tensor_data", "parameters"}) {
    response->add_extensions(extension);
  }
  return Answer(context, grpc::Status::OK);
}

namespace {

// GetModel for `name`, a model or a variant group (then one of its members describes it).
template <typename Response, typename Describe>
grpc::ServerUnaryReactor* DescribeByGetModel(v1::NormServe::Stub* stub,
                                             grpc::CallbackServerContext* context,
                                             const std::string& name, const std::string& member,
                                             const std::string& version, Response* response,
                                             Describe describe) {
  auto* hop = new HopOf<v1::GetModelRequest, v1::ModelInfo>(*context);
  hop->request.set_model(member);
  stub->async()->GetModel(&hop->client, &hop->request, &hop->response,
                          [hop, name, version, response, describe](grpc::Status status) {
                            const auto& versions = hop->response.versions();
                            if (status.ok() && !version.empty() &&
                                std::find(versions.begin(), versions.end(),
                                          kserve::ParseVersion(version)) == versions.end()) {
                              status = grpc::Status(grpc::StatusCode::NOT_FOUND,
                                                    "model '" + name + "' does not serve version " +
                                                        QuoteInput(version));
                            }
                            if (status.ok()) describe(hop->response, name, response);
                            hop->Finish(status);
                          });
  return hop;
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  ModelRepository::LookupError error;
  std::string message;
  const ServingTarget target = repository_->Resolve(request->name(), 0, &error, &message);
  return DescribeByGetModel(stub.get(), context, request->name(),
                            target.model ? target.model->name() : request->name(),
                            request->version(), response,
                            [](const v1::ModelInfo& info, const std::string& name,
                               inference::ModelMetadataResponse* out) {
                              kserve::DescribeModel(info, out);
                              out->set_name(name);
                            });
}

grpc::ServerUnaryReactor* KServeService::ModelConfig(grpc::CallbackServerContext* context,
                                                     const inference::ModelConfigRequest* request,
                                                     inference::ModelConfigResponse* response) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  ModelRepository::LookupError error;
  std::string message;
  const ServingTarget target = repository_->Resolve(request->name(), 0, &error, &message);
  return DescribeByGetModel(
      stub.get(), context, request->name(), target.model ? target.model->name() : request->name(),
      request->version(), response,
      [](const v1::ModelInfo& info, const std::string& name, inference::ModelConfigResponse* out) {
        kserve::DescribeModel(info, out->mutable_config());
        out->mutable_config()->set_name(name);
        // Generate answers a request with a response per piece on ModelStreamInfer.
        out->mutable_config()->mutable_model_transaction_policy()->set_decoupled(
            info.architecture() != "transformer_mt");
      });
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* context,
                                                    const ModelInferRequest* request,
                                                    ModelInferResponse* response) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  bool is_mt = false;
  const bool serves =
      Serves(request->model_name(),
             std::max<int64_t>(0, kserve::ParseVersion(request->model_version())), &is_mt);
  auto* hop = new Hop(*context);
  InferRun::Start(stub.get(), &hop->client, *request,
                  serves ? std::optional<bool>(is_mt) : std::nullopt, /*streaming=*/false, {},
                  [hop, response](const grpc::Status& status, ModelInferResponse result) {
                    *response = std::move(result);
                    hop->Finish(status);
                  });
  return hop;
}

grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse>*
KServeService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  return new InferStream(this, context);
}

namespace {

using RepositoryParameters =
    google::protobuf::Map<std::string, inference::ModelRepositoryParameter>;

grpc::Status CheckRepositoryRequest(const std::string& repository_name,
                                    const RepositoryParameters& parameters) {
  if (!repository_name.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "normserved serves one repository: leave repository_name empty");
  }
  // Triton's clients send unload_dependents; a model here has no dependents.
  const bool only_dependents = parameters.size() == 1 && parameters.count("unload_dependents");
  if (!parameters.empty() && !only_dependents) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "load and unload take no parameters here: a model's files and model.json "
                        "in the repository say how it serves");
  }
  return grpc::Status::OK;
}

const char* IndexState(v1::ModelState state) {
  switch (state) {
    case v1::MODEL_STATE_READY:
      return "READY";
    case v1::MODEL_STATE_LOADING:
      return "LOADING";
    default:
      return "UNAVAILABLE";
  }
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  if (grpc::Status bad = CheckRepositoryRequest(request->repository_name(), {}); !bad.ok()) {
    return Answer(context, bad);
  }
  auto* hop = new HopOf<v1::ListModelsRequest, v1::ListModelsResponse>(*context);
  stub->async()->ListModels(
      &hop->client, &hop->request, &hop->response,
      [hop, ready_only = request->ready(), response](grpc::Status status) {
        for (const auto& model : hop->response.models()) {
          if (ready_only && model.state() != v1::MODEL_STATE_READY) continue;
          auto* entry = response->add_models();
          entry->set_name(model.name());
          if (model.version() > 0) entry->set_version(std::to_string(model.version()));
          entry->set_state(IndexState(model.state()));
          entry->set_reason(model.state() == v1::MODEL_STATE_UNLOADED ? "unloaded" : model.error());
        }
        hop->Finish(status);
      });
  return hop;
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  if (grpc::Status bad = CheckRepositoryRequest(request->repository_name(), request->parameters());
      !bad.ok()) {
    return Answer(context, bad);
  }
  auto* hop = new HopOf<v1::LoadModelRequest, v1::ModelInfo>(*context);
  hop->request.set_model(request->model_name());
  stub->async()->LoadModel(&hop->client, &hop->request, &hop->response,
                           [hop](grpc::Status status) { hop->Finish(status); });
  return hop;
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  const auto stub = backend();
  if (!stub) return Answer(context, kNotConnected);
  if (grpc::Status bad = CheckRepositoryRequest(request->repository_name(), request->parameters());
      !bad.ok()) {
    return Answer(context, bad);
  }
  auto* hop = new HopOf<v1::UnloadModelRequest, v1::UnloadModelResponse>(*context);
  hop->request.set_model(request->model_name());
  stub->async()->UnloadModel(&hop->client, &hop->request, &hop->response,
                             [hop](grpc::Status status) { hop->Finish(status); });
  return hop;
}

}  // namespace normserve
