#include "server/calls.h"

#include <algorithm>
#include <cstdio>

#include "models/compute.h"
#include "models/decoding/step_engine.h"
#include "models/errors.h"
#include "proto/status_names.h"
#include "server/metrics.h"

namespace normserve {

CallRecord::CallRecord(Metrics* metrics, const char* rpc, Clock::time_point start)
    : metrics_(metrics), rpc_(rpc), start_(start) {
  metrics_->AddInflight(1);
}

CallRecord::~CallRecord() {
  if (!finished_) metrics_->AddInflight(-1);
}

void CallRecord::Finish(const grpc::Status& status, const ServedModel* model) {
  if (finished_) return;
  finished_ = true;
  metrics_->AddInflight(-1);
  // Names the client made up are not label values: they could create unbounded series.
  metrics_->RecordRequest(model ? model->name() : "", model ? std::to_string(model->version()) : "",
                          model ? model->norm_label() : "", rpc_,
                          StatusCodeName(status.error_code()),
                          std::chrono::duration<double>(Clock::now() - start_).count());
}

Clock::time_point SteadyDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return Clock::time_point::max();
  const auto left = deadline - std::chrono::system_clock::now();
  // Deadlines years away are as good as none and would overflow the conversion.
  if (left > std::chrono::hours(24 * 365)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

InferenceCall::InferenceCall(Kind kind, grpc::CallbackServerContext* context,
                             std::shared_ptr<const ServedModel> model, int priority, int64_t tokens,
                             const CallEnvironment& env, const char* rpc, Clock::time_point arrived)
    : context_(context),
      model_(std::move(model)),
      kind_(kind),
      shutdown_(env.shutdown),
      priority_(priority),
      tokens_(tokens),
      deadline_(context ? SteadyDeadline(context) : Clock::now() + kUnattendedDeadline) {
  if (context) record_.emplace(env.metrics, rpc, arrived);
}

void InferenceCall::Finish(const grpc::Status& status) {
  if (finished_.exchange(true)) return;
  if (record_) record_->Finish(status, model_.get());
  if (on_finish_) {
    try {
      on_finish_(status);
    } catch (const std::exception&) {
      // A hook (shadow traffic) must never keep the client from its answer.
    }
  }
  Respond(status);
}

grpc::Status InferenceCall::StoppedStatus() const {
  if (cancelled())
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server shut down before this call finished "
                      "(--shutdown-grace-secs); retry on another replica");
}

void InferenceCall::Reject(Rejection why, const std::string& message) {
  switch (why) {
    case Rejection::kDeadlineExceeded:
      Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, message));
      break;
    case Rejection::kCancelled:
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, message));
      break;
    case Rejection::kShuttingDown:
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, message));
      break;
  }
}

namespace {

int64_t CountTokens(const TokenBatch& batch) {
  int64_t n = 0;
  for (const auto& s : batch) n += static_cast<int64_t>(s.size());
  return n;
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

}  // namespace

TranslateCall::TranslateCall(grpc::CallbackServerContext* context,
                             grpc::ServerUnaryReactor* reactor,
                             std::shared_ptr<const ServedModel> model, int priority,
                             TokenBatch sources_in, TranslationOptions options_in,
                             v1::TranslateResponse* response_in, const CallEnvironment& env,
                             Clock::time_point arrived)
    : InferenceCall(Kind::kTranslate, context, model, priority, CountTokens(sources_in), env,
                    "Translate", arrived),
      sources(std::move(sources_in)),
      options(options_in),
      response(response_in),
      reactor_(reactor) {}

void TranslateCall::Respond(const grpc::Status& status) {
  if (reactor_) reactor_->Finish(status);
}

ScoreCall::ScoreCall(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                     std::shared_ptr<const ServedModel> model, int priority, TokenBatch sources_in,
                     TokenBatch targets_in, v1::ScoreResponse* response_in,
                     const CallEnvironment& env, Clock::time_point arrived)
    : InferenceCall(Kind::kScore, context, model, priority,
                    CountTokens(sources_in) + CountTokens(targets_in), env, "Score", arrived),
      sources(std::move(sources_in)),
      targets(std::move(targets_in)),
      response(response_in),
      reactor_(reactor) {}

void ScoreCall::Respond(const grpc::Status& status) {
  if (reactor_) reactor_->Finish(status);
}

GenerateCall::GenerateCall(grpc::CallbackServerContext* context,
                           std::shared_ptr<GenerateStream> stream,
                           std::shared_ptr<const ServedModel> model, int priority,
                           std::vector<int64_t> prompt_in, GenerationOptions options_in,
                           const CallEnvironment& env, Clock::time_point arrived)
    : InferenceCall(Kind::kGenerate, context, model, priority,
                    static_cast<int64_t>(prompt_in.size()) + 1, env, "Generate", arrived),
      arrived_(arrived),
      prompt(std::move(prompt_in)),
      options(std::move(options_in)),
      stream_(std::move(stream)) {}

bool GenerateCall::cancelled() const {
  return (stream_ && stream_->gone()) || InferenceCall::cancelled();
}

void GenerateCall::Respond(const grpc::Status& status) {
  if (stream_) stream_->Complete(status);
}

bool GenerateCall::Send(v1::GenerateResponse message) {
  if (keep_text_) text_ += message.text();
  return stream_ ? stream_->Push(std::move(message)) : true;
}

void GenerateCall::RecordToken(Metrics* metrics) {
  const auto now = Clock::now();
  const bool first = last_token_at_ == Clock::time_point{};
  const double seconds =
      std::chrono::duration<double>(now - (first ? arrived_ : last_token_at_)).count();
  if (first) {
    metrics->RecordTimeToFirstToken(model_->name(), model_->norm_label(), seconds);
  } else {
    metrics->RecordInterTokenLatency(model_->name(), model_->norm_label(), seconds);
  }
  last_token_at_ = now;
}

std::shared_ptr<GenerateStream> GenerateStream::Create() {
  std::shared_ptr<GenerateStream> stream(new GenerateStream());
  stream->self_ = stream;
  return stream;
}

bool GenerateStream::Push(v1::GenerateResponse message) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (gone_ || finish_called_) return false;
  pending_.push_back(std::move(message));
  if (!writing_) {
    writing_ = true;
    StartWrite(&pending_.front());
  }
  return true;
}

void GenerateStream::Complete(const grpc::Status& status) {
  std::lock_guard<std::mutex> lock(mutex_);
  final_status_ = status;
  FinishIfDoneLocked();
}

void GenerateStream::FinishIfDoneLocked() {
  if (final_status_ && !writing_ && !finish_called_) {
    finish_called_ = true;
    Finish(*final_status_);
  }
}

void GenerateStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mutex_);
  pending_.pop_front();
  if (!ok) {
    gone_ = true;
    pending_.clear();
  }
  if (!pending_.empty()) {
    StartWrite(&pending_.front());
  } else {
    writing_ = false;
    FinishIfDoneLocked();
  }
}

void GenerateStream::OnCancel() { gone_ = true; }

void GenerateStream::OnDone() {
  std::shared_ptr<GenerateStream> last;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    gone_ = true;
    finish_called_ = true;  // nothing may touch the reactor from now on
    last = std::move(self_);
  }
}

namespace {

template <typename Call>
std::vector<Call*> Downcast(std::vector<std::shared_ptr<QueuedRequest>>& batch) {
  std::vector<Call*> calls;
  for (auto& r : batch) calls.push_back(static_cast<Call*>(r.get()));
  return calls;
}

void RunScore(const std::vector<ScoreCall*>& calls, int64_t memory_budget_bytes) {
  const ServedModel& model = calls.front()->model();
  TokenBatch sources, targets;
  std::vector<size_t> owner;  // sentence -> call
  for (size_t c = 0; c < calls.size(); ++c) {
    sources.insert(sources.end(), calls[c]->sources.begin(), calls[c]->sources.end());
    targets.insert(targets.end(), calls[c]->targets.begin(), calls[c]->targets.end());
    owner.insert(owner.end(), calls[c]->targets.size(), c);
  }
  std::vector<char> stopped(calls.size(), 0);
  const auto scores = model.ScoreTokens(
      sources, targets,
      [&](int64_t sentence) {
        const size_t c = owner[static_cast<size_t>(sentence)];
        if (calls[c]->ShouldStop()) stopped[c] = 1;
        return stopped[c] != 0;
      },
      memory_budget_bytes);
  size_t next = 0;
  for (size_t c = 0; c < calls.size(); ++c) {
    ScoreCall* call = calls[c];
    call->response->set_model(model.name());
    call->response->set_version(model.version());
    call->response->set_norm(model.norm_label());
    for (size_t i = 0; i < call->targets.size(); ++i)
      FillScore(scores[next++], call->response->add_results());
    call->Finish(stopped[c] ? call->StoppedStatus() : grpc::Status::OK);
  }
}

}  // namespace

struct ModelRunner::Engine {
  Engine(std::shared_ptr<const ServedModel> m, int64_t budget)
      : model(std::move(m)), engine(std::make_unique<StepEngine>(*model, budget)) {}
  std::shared_ptr<const ServedModel> model;  // kept alive while its engine runs
  std::unique_ptr<StepEngine> engine;
  // Admitted and not answered: what a failed step must answer.
  std::vector<std::shared_ptr<InferenceCall>> calls;
};

ModelRunner::ModelRunner(Metrics* metrics, const BatcherConfig& config, int instance)
    : metrics_(metrics),
      memory_budget_bytes_(config.memory_budget_bytes),
      threads_(config.threads),
      instance_(std::to_string(instance)) {}

ModelRunner::~ModelRunner() = default;

void ModelRunner::OnExecutorStart() { SetThreadComputeThreads(threads_); }

void ModelRunner::Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) {
  auto* first = static_cast<InferenceCall*>(batch.front().get());
  const ServedModel& model = first->model();
  int64_t source_tokens = 0;
  for (const auto& r : batch) source_tokens += r->tokens();
  metrics_->AddTokens(model.name(), "source", source_tokens);
  switch (first->kind()) {
    case InferenceCall::Kind::kScore: {
      const auto start = Clock::now();
      try {
        RunScore(Downcast<ScoreCall>(batch), memory_budget_bytes_);
      } catch (const std::exception& e) {
        // The inputs were checked at arrival, so this is the server's fault, not the client's.
        for (auto& r : batch) {
          static_cast<InferenceCall*>(r.get())->Finish(
              grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what()));
        }
      }
      metrics_->RecordCompute(model.name(), model.norm_label(),
                              std::chrono::duration<double>(Clock::now() - start).count());
      return;
    }
    case InferenceCall::Kind::kTranslate:
      for (auto& r : batch) Admit(std::static_pointer_cast<TranslateCall>(r));
      return;
    case InferenceCall::Kind::kGenerate:
      for (auto& r : batch) Admit(std::static_pointer_cast<GenerateCall>(r));
      return;
  }
}

ModelRunner::Engine& ModelRunner::Track(const std::shared_ptr<InferenceCall>& call) {
  auto& engine = engines_[&call->model()];
  if (!engine) engine = std::make_unique<Engine>(call->shared_model(), memory_budget_bytes_);
  engine->calls.push_back(call);
  load_.requests += 1;
  load_.tokens += call->tokens();
  return *engine;
}

namespace {

// A call's work stops when the call should (its client left, its deadline or the shutdown
// grace passed), and is then answered with the reason.
template <typename Work>
void StopWith(const std::shared_ptr<InferenceCall>& call, Work& work) {
  work.stop = [call] { return call->ShouldStop(); };
  work.stopped = [call] { call->Finish(call->StoppedStatus()); };
}

}  // namespace

void ModelRunner::Admit(const std::shared_ptr<TranslateCall>& call) {
  Engine& engine = Track(call);
  Metrics* metrics = metrics_;
  TranslationWork work;
  work.sources = call->sources;
  work.options = call->options;
  StopWith(call, work);
  work.done = [call, metrics](std::vector<std::vector<TranslationHypothesis>>&& results) {
    const ServedModel& model = call->model();
    int64_t generated = 0;
    for (const auto& hypotheses : results) {
      auto* translation = call->response->add_translations();
      for (const auto& h : hypotheses) {
        auto* out = translation->add_hypotheses();
        out->set_text(h.text);
        out->set_score(static_cast<float>(h.score));
        for (const auto& t : h.tokens) out->add_tokens(t);
      }
      if (!hypotheses.empty()) generated += hypotheses.front().token_count;
    }
    metrics->AddTokens(model.name(), "generated", generated);
    call->response->set_model(model.name());
    call->response->set_version(model.version());
    call->response->set_norm(model.norm_label());
    call->Finish(grpc::Status::OK);
  };
  engine.engine->Add(std::move(work));
}

void ModelRunner::Admit(const std::shared_ptr<GenerateCall>& call) {
  Engine& engine = Track(call);
  Metrics* metrics = metrics_;
  GenerationWork work;
  work.prompt = call->prompt;
  work.options = call->options;
  StopWith(call, work);
  work.on_text = [call](const std::string& delta) {
    v1::GenerateResponse piece;
    piece.set_text(delta);
    return call->Send(std::move(piece));
  };
  work.on_token = [call, metrics] { call->RecordToken(metrics); };
  work.done = [call, metrics](GenerationResult&& result) {
    const ServedModel& model = call->model();
    metrics->AddTokens(model.name(), "generated", result.tokens);
    if (result.finish_reason == "cancelled") {
      call->Finish(call->StoppedStatus());
      return;
    }
    v1::GenerateResponse last;
    last.set_finish_reason(result.finish_reason);
    last.set_tokens(result.tokens);
    last.set_model(model.name());
    last.set_version(model.version());
    last.set_norm(model.norm_label());
    call->Send(std::move(last));
    call->Finish(grpc::Status::OK);
  };
  engine.engine->Add(std::move(work));
}

bool ModelRunner::Step() {
  RunnerLoad load;
  for (auto it = engines_.begin(); it != engines_.end();) {
    Engine& engine = *it->second;
    const ServedModel& model = *engine.model;
    const auto start = Clock::now();
    try {
      if (engine.engine->Step()) {
        metrics_->RecordCompute(model.name(), model.norm_label(),
                                std::chrono::duration<double>(Clock::now() - start).count());
      }
    } catch (const std::exception& e) {
      // The inputs were checked at arrival, so this is the server's fault, not the client's;
      // the engine's state is not to be trusted after it, so it goes with its calls.
      for (auto& call : engine.calls) {
        call->Finish(
            grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what()));
      }
      engine.calls.clear();
      engine.engine = std::make_unique<StepEngine>(model, memory_budget_bytes_);
    }
    auto& calls = engine.calls;
    calls.erase(
        std::remove_if(calls.begin(), calls.end(), [](const auto& c) { return c->finished(); }),
        calls.end());
    const EngineLoad engine_load = engine.engine->load();
    metrics_->SetSequences(model.name(), instance_, engine_load.running_sequences,
                           engine_load.waiting_requests);
    if (calls.empty() && engine.engine->idle()) {
      it = engines_.erase(it);
      continue;
    }
    load.requests += static_cast<int64_t>(calls.size());
    for (const auto& call : calls) load.tokens += call->tokens();
    ++it;
  }
  load_ = load;
  return !engines_.empty();
}

}  // namespace normserve
