#include "server/service.h"

#include <iterator>
#include <string_view>

#include "models/errors.h"
#include "server/calls.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/names.h"
#include "server/shadow_traffic.h"
#include "server/worker_pool.h"

namespace normserve {
namespace {

const grpc::Status kDraining(grpc::StatusCode::UNAVAILABLE,
                             "the server is shutting down; retry on another replica");

TranslationOptions FromProto(const v1::TranslateOptions& p) {
  TranslationOptions o;
  if (p.has_beam_size()) o.beam_size = p.beam_size();
  if (p.has_n_best()) o.n_best = p.n_best();
  if (p.has_length_penalty()) o.length_penalty = p.length_penalty();
  if (p.has_max_length_a()) o.max_length_a = p.max_length_a();
  if (p.has_max_length_b()) o.max_length_b = p.max_length_b();
  o.return_tokens = p.return_tokens();
  return o;
}

GenerationOptions FromProto(const v1::GenerateOptions& p) {
  GenerationOptions o;
  if (p.has_temperature()) o.temperature = p.temperature();
  if (p.has_top_k()) o.top_k = p.top_k();
  if (p.has_top_p()) o.top_p = p.top_p();
  if (p.has_seed()) o.seed = p.seed();
  if (p.has_max_new_tokens()) o.max_new_tokens = p.max_new_tokens();
  o.stop.assign(p.stop().begin(), p.stop().end());
  return o;
}

// Codes a client can act on: UNAVAILABLE (retry) only while the model is on its way.
grpc::StatusCode LookupCode(ModelRepository::LookupError error) {
  switch (error) {
    case ModelRepository::LookupError::kLoading:
      return grpc::StatusCode::UNAVAILABLE;
    // The model is in the repository but none of its versions loads: retrying cannot help
    // until an operator fixes the files, and the name is right, so not NOT_FOUND either.
    case ModelRepository::LookupError::kFailed:
      return grpc::StatusCode::FAILED_PRECONDITION;
    default:  // unknown, unloaded (nothing serves it until LoadModel) or an unknown version
      return grpc::StatusCode::NOT_FOUND;
  }
}

v1::ModelState ToProto(ModelState state) {
  switch (state) {
    case ModelState::kLoading:
      return v1::MODEL_STATE_LOADING;
    case ModelState::kReady:
      return v1::MODEL_STATE_READY;
    case ModelState::kFailed:
      return v1::MODEL_STATE_FAILED;
    case ModelState::kUnloaded:
      return v1::MODEL_STATE_UNLOADED;
  }
  return v1::MODEL_STATE_UNSPECIFIED;
}

// Priority 0 means the lowest level; 1..levels are explicit.
bool ToQueuePriority(uint32_t requested, int levels, int* queue_priority, std::string* message) {
  if (requested > static_cast<uint32_t>(levels)) {
    *message = "priority is " + std::to_string(requested) + "; this model has priority levels 1.." +
               std::to_string(levels) + " (1 first, 0 = lowest)";
    return false;
  }
  *queue_priority = requested == 0 ? levels - 1 : static_cast<int>(requested) - 1;
  return true;
}

// INVALID_ARGUMENT unless `name` can name a model or group (server/names.h); it is quoted
// truncated, never echoed whole.
grpc::Status CheckName(const std::string& name) {
  if (name.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the request names no model");
  }
  if (!IsValidModelName(name)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "model " + QuoteInput(name) +
                            " is not a model or group name: 1-128 letters, digits, '.', '_' "
                            "or '-', not starting with '.' (no paths)");
  }
  return grpc::Status::OK;
}

// Answers a unary call that arrived at `arrived` and was refused before it became a model
// call, and counts it.
auto UnaryRefusal(Metrics* metrics, const char* rpc, grpc::ServerUnaryReactor* reactor,
                  Clock::time_point arrived) {
  return [metrics, rpc, reactor, arrived](const grpc::Status& status, const ServedModel* model) {
    CallRecord(metrics, rpc, arrived).Finish(status, model);
    reactor->Finish(status);
  };
}

// `with_path`: the server's file system layout is for admin callers only.
void FillInfo(const ModelStatus& s, bool with_path, v1::ModelInfo* out) {
  out->set_name(s.name);
  out->set_state(ToProto(s.state));
  out->set_ready(s.newest != nullptr);
  out->set_error(s.error);
  if (with_path) out->set_path(s.path);
  out->set_group(s.group);
  for (int64_t v : s.ready_versions) out->add_versions(v);
  if (!s.newest) return;
  const ModelConfig& c = s.newest->config();
  out->set_version(s.newest->version());
  out->set_architecture(c.is_mt() ? "transformer_mt" : "transformer_lm");
  out->set_norm(s.newest->norm_label());
  for (NormSite site : c.sites()) {
    auto* entry = out->add_norm_sites();
    entry->set_site(NormSiteName(site));
    entry->set_variant(std::string(NormKindName(c.norm(site).kind)));
  }
  out->set_max_positions(static_cast<uint32_t>(c.max_positions));
  out->set_parameters(static_cast<uint64_t>(s.newest->parameter_count()));
}

grpc::StatusCode AuthCode(AuthDecision::Code code) {
  switch (code) {
    case AuthDecision::Code::kOk:
      return grpc::StatusCode::OK;
    case AuthDecision::Code::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
    case AuthDecision::Code::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case AuthDecision::Code::kAdminOff:
      return grpc::StatusCode::FAILED_PRECONDITION;
  }
  return grpc::StatusCode::UNAUTHENTICATED;
}

}  // namespace

// Requests that may wait for a tokenizer thread before new ones get RESOURCE_EXHAUSTED.
constexpr size_t kMaxWaitingToTokenize = 1024;

NormServeService::NormServeService(ModelRepository* repository, Metrics* metrics,
                                   ModelControl control, WorkerPool* management,
                                   const RequestLimits& limits, int tokenizer_threads,
                                   Authorizer* authorizer)
    : repository_(repository),
      metrics_(metrics),
      control_(control),
      management_(management),
      authorizer_(authorizer),
      limits_(limits),
      env_{metrics, &shutdown_},
      tokenizer_(std::make_unique<WorkerPool>(tokenizer_threads, kMaxWaitingToTokenize)),
      shadow_traffic_(std::make_unique<ShadowTraffic>(metrics, env_, limits)) {}

NormServeService::~NormServeService() { StartDraining(Clock::now()); }

// Every handler calls this first: the token check runs the same on plaintext and TLS ports
// (gRPC's AuthMetadataProcessor would be tied to the server credentials; see server/auth.h).
grpc::Status NormServeService::Authorize(const grpc::CallbackServerContext& context, Scope scope,
                                         bool* admin) const {
  const auto& metadata = context.client_metadata();
  const auto [first, last] = metadata.equal_range("authorization");
  if (first != last && std::next(first) != last) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "send one authorization metadata entry, 'Bearer <token>'");
  }
  const std::string_view header =
      first == last ? std::string_view()
                    : std::string_view(first->second.data(), first->second.size());
  const AuthDecision decision = authorizer_->Check(first == last ? nullptr : &header, scope);
  if (admin != nullptr) *admin = decision.admin;
  return grpc::Status(AuthCode(decision.code), decision.message);
}

void NormServeService::StartDraining(Clock::time_point abandon_at) {
  shutdown_.Set(abandon_at);
  draining_ = true;
  shadow_traffic_->Stop();
  std::unique_ptr<WorkerPool> tokenizer;
  {
    std::lock_guard<std::mutex> lock(tokenizer_mutex_);
    tokenizer = std::move(tokenizer_);
  }
  tokenizer.reset();  // the waiting requests see draining_ and are answered UNAVAILABLE
}

bool NormServeService::SubmitTokenizing(std::function<void()> task) {
  std::lock_guard<std::mutex> lock(tokenizer_mutex_);
  return tokenizer_ && tokenizer_->Submit(std::move(task));
}

template <typename Prepare, typename Refuse>
void NormServeService::Infer(grpc::CallbackServerContext* context, const std::string& name,
                             int64_t version, uint32_t requested_priority, Prepare prepare,
                             Refuse refuse) {
  // Who asks first, then the cheap checks, on gRPC's thread.
  if (grpc::Status denied = Authorize(*context, Scope::kInfer); !denied.ok()) {
    return refuse(denied, nullptr);
  }
  if (draining_) return refuse(kDraining, nullptr);
  if (const grpc::Status bad_name = CheckName(name); !bad_name.ok()) {
    return refuse(grpc::Status(bad_name.error_code(), bad_name.error_message() + "; available: " +
                                                          repository_->ReadyNames()),
                  nullptr);
  }
  ModelRepository::LookupError error;
  std::string message;
  ServingTarget target = repository_->Resolve(name, version, &error, &message);
  if (!target.model) return refuse(grpc::Status(LookupCode(error), message), nullptr);
  int priority = 0;
  if (!ToQueuePriority(requested_priority, target.batcher->config().priority_levels, &priority,
                       &message)) {
    return refuse(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message), target.model.get());
  }
  RequestLimits limits = limits_;
  limits.memory_budget_bytes = target.batcher->config().memory_budget_bytes;
  // Tokenizing costs time that grows faster than the text (SentencePiece), so it runs on
  // the tokenizer threads, after the byte and count checks inside prepare().
  const bool submitted = SubmitTokenizing([this, context, target, priority, limits, prepare,
                                           refuse] {
    const ServedModel* model = target.model.get();
    if (draining_) return refuse(kDraining, model);
    if (context->IsCancelled()) {
      const bool expired = SteadyDeadline(context) <= Clock::now();
      return refuse(
          grpc::Status(expired ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED,
                       expired ? "the deadline passed before the request was tokenized"
                               : "the client cancelled the call"),
          model);
    }
    std::shared_ptr<InferenceCall> call;
    try {
      call = prepare(target.model, priority, limits, target.shadows);
    } catch (const InvalidInputError& e) {
      return refuse(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what()), model);
    }
    std::string why;
    switch (target.batcher->Enqueue(call, &why)) {
      case Batcher::EnqueueResult::kQueued:
        break;
      case Batcher::EnqueueResult::kQueueFull:
        call->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, why));
        break;
      case Batcher::EnqueueResult::kStopping:
        call->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, why));
        break;
    }
  });
  if (!submitted) {
    refuse(draining_ ? kDraining
                     : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                    std::to_string(kMaxWaitingToTokenize) +
                                        " requests already wait to be tokenized; retry later"),
           target.model.get());
  }
}

grpc::ServerUnaryReactor* NormServeService::Translate(grpc::CallbackServerContext* context,
                                                      const v1::TranslateRequest* request,
                                                      v1::TranslateResponse* response) {
  const auto arrived = Clock::now();
  auto* reactor = context->DefaultReactor();
  const auto refuse = UnaryRefusal(metrics_, "Translate", reactor, arrived);
  Infer(
      context, request->model(), request->version(), request->priority(),
      // DefaultReactor() constructs the reactor anew on each call: call it once, here.
      [this, context, reactor, request, response, arrived](
          std::shared_ptr<const ServedModel> model, int priority, const RequestLimits& limits,
          const std::vector<ShadowMember>& shadows) {
        const TranslationOptions options = FromProto(request->options());
        std::vector<std::string> texts(request->texts().begin(), request->texts().end());
        TokenBatch sources = model->PrepareTranslate(texts, options, limits);
        auto call =
            std::make_shared<TranslateCall>(context, reactor, model, priority, std::move(sources),
                                            options, response, env_, arrived);
        if (shadows.empty()) return call;
        call->OnFinish([this, shadows, model, texts, options, response](const grpc::Status& s) {
          if (!s.ok()) return;
          std::vector<std::string> answers;
          for (const auto& t : response->translations()) {
            answers.push_back(t.hypotheses_size() > 0 ? t.hypotheses(0).text() : "");
          }
          for (const ShadowMember& shadow : shadows) {
            shadow_traffic_->Translate(shadow, *model, texts, options, answers);
          }
        });
        return call;
      },
      refuse);
  return reactor;
}

grpc::ServerUnaryReactor* NormServeService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  const auto arrived = Clock::now();
  auto* reactor = context->DefaultReactor();
  const auto refuse = UnaryRefusal(metrics_, "Score", reactor, arrived);
  Infer(
      context, request->model(), request->version(), request->priority(),
      [this, context, reactor, request, response, arrived](
          std::shared_ptr<const ServedModel> model, int priority, const RequestLimits& limits,
          const std::vector<ShadowMember>& shadows) {
        if (request->texts_size() > 0 && request->pairs_size() > 0) {
          throw InvalidInputError(
              "send either texts (language models) or pairs (translation "
              "models), not both");
        }
        TokenBatch sources, targets;
        if (model->config().is_mt() && request->pairs_size() > 0) {
          std::vector<std::pair<std::string, std::string>> pairs;
          for (const auto& p : request->pairs()) pairs.emplace_back(p.source(), p.target());
          std::tie(sources, targets) = model->PrepareScorePairs(pairs, limits);
        } else if (!model->config().is_mt() && request->pairs_size() > 0) {
          throw InvalidInputError("model '" + model->name() +
                                  "' is a transformer_lm: score texts, not pairs");
        } else {
          targets =
              model->PrepareScoreTexts({request->texts().begin(), request->texts().end()}, limits);
        }
        auto call =
            std::make_shared<ScoreCall>(context, reactor, model, priority, std::move(sources),
                                        std::move(targets), response, env_, arrived);
        if (shadows.empty()) return call;
        call->OnFinish([this, shadows, model, request, response](const grpc::Status& s) {
          if (!s.ok()) return;
          std::vector<std::pair<std::string, std::string>> pairs;
          for (const auto& p : request->pairs()) pairs.emplace_back(p.source(), p.target());
          const std::vector<std::string> texts(request->texts().begin(), request->texts().end());
          std::vector<std::vector<float>> answers;
          for (const auto& result : response->results()) {
            answers.emplace_back();
            for (const auto& token : result.tokens()) answers.back().push_back(token.logprob());
          }
          for (const ShadowMember& shadow : shadows) {
            shadow_traffic_->Score(shadow, *model, pairs, texts, answers);
          }
        });
        return call;
      },
      refuse);
  return reactor;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* NormServeService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  const auto arrived = Clock::now();
  auto stream = GenerateStream::Create();
  Metrics* metrics = metrics_;
  const auto refuse = [metrics, stream, arrived](const grpc::Status& status,
                                                 const ServedModel* model) {
    CallRecord(metrics, "Generate", arrived).Finish(status, model);
    stream->Complete(status);
  };
  Infer(
      context, request->model(), request->version(), request->priority(),
      [this, context, request, stream, arrived](std::shared_ptr<const ServedModel> model,
                                                int priority, const RequestLimits& limits,
                                                const std::vector<ShadowMember>& shadows) {
        const GenerationOptions options = FromProto(request->options());
        std::vector<int64_t> prompt = model->PrepareGenerate(request->prompt(), options, limits);
        auto call = std::make_shared<GenerateCall>(context, stream, model, priority,
                                                   std::move(prompt), options, env_, arrived);
        if (shadows.empty()) return call;
        call->KeepText();
        // The hook belongs to the call: a raw pointer, not a cycle of shared ones.
        GenerateCall* self = call.get();
        call->OnFinish([this, shadows, model, request, options, self](const grpc::Status& s) {
          if (!s.ok()) return;
          for (const ShadowMember& shadow : shadows) {
            shadow_traffic_->Generate(shadow, *model, request->prompt(), options, self->text());
          }
        });
        return call;
      },
      refuse);
  return stream->reactor();
}

grpc::ServerUnaryReactor* NormServeService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*,
                                                       v1::ListModelsResponse* response) {
  auto* reactor = context->DefaultReactor();
  bool admin = false;
  if (grpc::Status denied = Authorize(*context, Scope::kInfer, &admin); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  for (const ModelStatus& s : repository_->List()) FillInfo(s, admin, response->add_models());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* NormServeService::GetModel(grpc::CallbackServerContext* context,
                                                     const v1::GetModelRequest* request,
                                                     v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  bool admin = false;
  if (grpc::Status denied = Authorize(*context, Scope::kInfer, &admin); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  if (const grpc::Status bad_name = CheckName(request->model()); !bad_name.ok()) {
    reactor->Finish(bad_name);
    return reactor;
  }
  const auto status = repository_->Get(request->model());
  if (!status) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     "model '" + request->model() +
                         "' is not in the repository; available: " + repository_->ReadyNames()));
  } else {
    FillInfo(*status, admin, response);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::Status NormServeService::CheckManagement(const std::string& model) const {
  if (draining_) return kDraining;
  if (control_ != ModelControl::kExplicit) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "models are loaded and unloaded by RPC only with --model-control "
                        "explicit; this server runs with " +
                            std::string(control_ == ModelControl::kPoll ? "poll" : "none"));
  }
  return CheckName(model);
}

grpc::ServerUnaryReactor* NormServeService::LoadModel(grpc::CallbackServerContext* context,
                                                      const v1::LoadModelRequest* request,
                                                      v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status denied = Authorize(*context, Scope::kAdmin); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  const grpc::Status check = CheckManagement(request->model());
  if (!check.ok()) {
    reactor->Finish(check);
    return reactor;
  }
  // The load runs on the repository's loading threads, which answer when it is done: a slow
  // model holds up neither gRPC's threads nor the loads of other models.
  repository_->Load(request->model(), [this, reactor, request, response](const std::string& error) {
    const auto status = repository_->Get(request->model());
    if (status) FillInfo(*status, /*with_path=*/true, response);
    if (!status || status->ready_versions.empty()) {
      reactor->Finish(grpc::Status(
          status ? grpc::StatusCode::FAILED_PRECONDITION : grpc::StatusCode::NOT_FOUND, error));
    } else if (!error.empty()) {
      // An older version still serves; say why the newer one does not.
      reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                   error + " (version " +
                                       std::to_string(status->ready_versions.back()) +
                                       " keeps serving)"));
    } else {
      reactor->Finish(grpc::Status::OK);
    }
  });
  return reactor;
}

grpc::ServerUnaryReactor* NormServeService::UnloadModel(grpc::CallbackServerContext* context,
                                                        const v1::UnloadModelRequest* request,
                                                        v1::UnloadModelResponse*) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status denied = Authorize(*context, Scope::kAdmin); !denied.ok()) {
    reactor->Finish(denied);
    return reactor;
  }
  const grpc::Status check = CheckManagement(request->model());
  if (!check.ok()) {
    reactor->Finish(check);
    return reactor;
  }
  // Unload waits for the model's queued calls to drain: not on a gRPC thread.
  management_->Submit([this, reactor, request] {
    std::string error;
    reactor->Finish(repository_->Unload(request->model(), &error)
                        ? grpc::Status::OK
                        : grpc::Status(grpc::StatusCode::NOT_FOUND, error));
  });
  return reactor;
}

}  // namespace normserve
