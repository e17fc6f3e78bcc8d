#include "server/service.h"

#include <chrono>

#include "models/errors.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/status_names.h"
#include "server/worker_pool.h"

namespace normserve {
namespace {

using Clock = std::chrono::steady_clock;

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

void FillScore(const TextScore& s, v1::ScoredText* out) {
  for (const TokenScore& t : s.tokens) {
    auto* token = out->add_tokens();
    token->set_token(t.token);
    token->set_logprob(static_cast<float>(t.logprob));
  }
  out->set_total_logprob(s.total_logprob);
  out->set_perplexity(s.perplexity);
}

void FillInfo(const ModelStatus& s, v1::ModelInfo* out) {
  out->set_name(s.name);
  out->set_version(s.version);
  out->set_state(s.state);
  out->set_ready(s.model != nullptr);
  out->set_error(s.error);
  out->set_path(s.path);
  if (!s.model) return;
  const ModelConfig& c = s.model->config();
  out->set_architecture(c.is_mt() ? "transformer_mt" : "transformer_lm");
  out->set_norm(s.model->norm_label());
  for (NormSite site : c.sites()) {
    auto* entry = out->add_norm_sites();
    entry->set_site(NormSiteName(site));
    entry->set_variant(std::string(NormKindName(c.norm(site).kind)));
  }
  out->set_max_positions(static_cast<uint32_t>(c.max_positions));
  out->set_parameters(static_cast<uint64_t>(s.model->parameter_count()));
}

}  // namespace

NormServeService::NormServeService(ModelRepository* repository, Metrics* metrics,
                                   WorkerPool* workers)
    : repository_(repository), metrics_(metrics), workers_(workers) {}

// Runs `work` against the model the request names on a worker thread, then finishes the
// call with the status the work's outcome maps to, and records it.
template <typename Work>
static grpc::ServerUnaryReactor* RunModelCall(grpc::CallbackServerContext* context,
                                              ModelRepository* repository, Metrics* metrics,
                                              WorkerPool* workers, const char* rpc,
                                              const std::string& model_name, Work work) {
  auto* reactor = context->DefaultReactor();
  const auto start = Clock::now();
  auto finish = [=](const grpc::Status& status, const std::string& version,
                    const std::string& norm, const std::string& model_label) {
    metrics->RecordRequest(model_label, version, norm, rpc, StatusCodeName(status.error_code()),
                           std::chrono::duration<double>(Clock::now() - start).count());
    reactor->Finish(status);
  };
  if (model_name.empty()) {
    finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the request names no model; available models: " +
                            repository->ReadyNames()),
           "", "", "");
    return reactor;
  }
  std::shared_ptr<const ServedModel> model = repository->Find(model_name);
  if (!model) {
    // Unknown names are not used as label values: a client could create unbounded series.
    finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "model '" + model_name +
                                                         "' is not served; available models: " +
                                                         repository->ReadyNames()),
           "", "", "");
    return reactor;
  }
  workers->Submit([=]() mutable {
    grpc::Status status;
    if (context->IsCancelled()) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
    } else {
      try {
        work(*model);
      } catch (const InvalidInputError& e) {
        status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
      } catch (const std::exception& e) {
        status = grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what());
      }
    }
    finish(status, std::to_string(model->version()), model->norm_label(), model->name());
  });
  return reactor;
}

grpc::ServerUnaryReactor* NormServeService::Translate(grpc::CallbackServerContext* context,
                                                      const v1::TranslateRequest* request,
                                                      v1::TranslateResponse* response) {
  return RunModelCall(context, repository_, metrics_, workers_, "Translate", request->model(),
                      [request, response](const ServedModel& model) {
                        const std::vector<std::string> texts(request->texts().begin(),
                                                             request->texts().end());
                        const auto results = model.Translate(texts, FromProto(request->options()));
                        response->set_model(model.name());
                        response->set_version(model.version());
                        response->set_norm(model.norm_label());
                        for (const auto& hypotheses : results) {
                          auto* translation = response->add_translations();
                          for (const auto& h : hypotheses) {
                            auto* out = translation->add_hypotheses();
                            out->set_text(h.text);
                            out->set_score(static_cast<float>(h.score));
                            for (const auto& t : h.tokens) out->add_tokens(t);
                          }
                        }
                      });
}

grpc::ServerUnaryReactor* NormServeService::Score(grpc::CallbackServerContext* context,
                                                  const v1::ScoreRequest* request,
                                                  v1::ScoreResponse* response) {
  return RunModelCall(
      context, repository_, metrics_, workers_, "Score", request->model(),
      [request, response](const ServedModel& model) {
        if (request->texts_size() > 0 && request->pairs_size() > 0) {
          throw InvalidInputError("send either texts (language models) or pairs "
                                  "(translation models), not both");
        }
        std::vector<TextScore> scores;
        if (model.config().is_mt()) {
          std::vector<std::pair<std::string, std::string>> pairs;
          for (const auto& p : request->pairs()) pairs.emplace_back(p.source(), p.target());
          if (pairs.empty() && request->texts_size() > 0) {
            throw InvalidInputError("model '" + model.name() +
                                    "' is a transformer_mt: score source/target pairs, "
                                    "not texts");
          }
          scores = model.ScorePairs(pairs);
        } else {
          if (request->pairs_size() > 0) {
            throw InvalidInputError("model '" + model.name() +
                                    "' is a transformer_lm: score texts, not pairs");
          }
          scores = model.ScoreTexts({request->texts().begin(), request->texts().end()});
        }
        response->set_model(model.name());
        response->set_version(model.version());
        response->set_norm(model.norm_label());
        for (const TextScore& s : scores) FillScore(s, response->add_results());
      });
}

grpc::ServerUnaryReactor* NormServeService::ListModels(grpc::CallbackServerContext* context,
                                                       const v1::ListModelsRequest*,
                                                       v1::ListModelsResponse* response) {
  for (const ModelStatus& s : repository_->List()) FillInfo(s, response->add_models());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* NormServeService::GetModel(grpc::CallbackServerContext* context,
                                                     const v1::GetModelRequest* request,
                                                     v1::ModelInfo* response) {
  auto* reactor = context->DefaultReactor();
  const auto status = repository_->Get(request->model());
  if (!status) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "model '" + request->model() +
                                     "' is not in the repository; available models: " +
                                     repository_->ReadyNames()));
  } else {
    FillInfo(*status, response);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

}  // namespace normserve
