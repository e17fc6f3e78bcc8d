#include "server/calls.h"

#include <cstdio>

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
                             std::string batch_key, const CallEnvironment& env, const char* rpc,
                             Clock::time_point arrived)
    : context_(context),
      model_(std::move(model)),
      record_(env.metrics, rpc, arrived),
      kind_(kind),
      shutdown_(env.shutdown),
      priority_(priority),
      tokens_(tokens),
      batch_key_(std::move(batch_key)),
      deadline_(SteadyDeadline(context)) {}

void InferenceCall::Finish(const grpc::Status& status) {
  if (finished_.exchange(true)) return;
  record_.Finish(status, model_.get());
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

std::string ModelKey(const ServedModel& model) {
  return model.name() + "@" + std::to_string(model.version()) + "#" +
         std::to_string(reinterpret_cast<uintptr_t>(&model));
}

// Exact: "%a" writes every bit of a double, so options that differ anywhere never share a
// batch (std::to_string keeps 6 decimals).
std::string ExactNumber(double value) {
  char out[40];
  std::snprintf(out, sizeof(out), "%a", value);
  return out;
}

std::string TranslateKey(const ServedModel& model, const TranslationOptions& o) {
  return "translate|" + ModelKey(model) + "|" + std::to_string(o.beam_size) + "," +
         std::to_string(o.n_best) + "," + ExactNumber(o.length_penalty) + "," +
         ExactNumber(o.max_length_a) + "," + std::to_string(o.max_length_b) + "," +
         (o.return_tokens ? "t" : "f");
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
    : InferenceCall(Kind::kTranslate, context, model, priority, CountTokens(sources_in),
                    TranslateKey(*model, options_in), env, "Translate", arrived),
      sources(std::move(sources_in)),
      options(options_in),
      response(response_in),
      reactor_(reactor) {}

void TranslateCall::Respond(const grpc::Status& status) { reactor_->Finish(status); }

ScoreCall::ScoreCall(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                     std::shared_ptr<const ServedModel> model, int priority, TokenBatch sources_in,
                     TokenBatch targets_in, v1::ScoreResponse* response_in,
                     const CallEnvironment& env, Clock::time_point arrived)
    : InferenceCall(Kind::kScore, context, model, priority,
                    CountTokens(sources_in) + CountTokens(targets_in), "score|" + ModelKey(*model),
                    env, "Score", arrived),
      sources(std::move(sources_in)),
      targets(std::move(targets_in)),
      response(response_in),
      reactor_(reactor) {}

void ScoreCall::Respond(const grpc::Status& status) { reactor_->Finish(status); }

GenerateCall::GenerateCall(grpc::CallbackServerContext* context,
                           std::shared_ptr<GenerateStream> stream,
                           std::shared_ptr<const ServedModel> model, int priority,
                           std::vector<int64_t> prompt_in, GenerationOptions options_in,
                           const CallEnvironment& env, Clock::time_point arrived)
    : InferenceCall(Kind::kGenerate, context, model, priority,
                    static_cast<int64_t>(prompt_in.size()) + 1,
                    // Each stream decodes alone: a key no other call shares.
                    "generate|" + std::to_string(reinterpret_cast<uintptr_t>(stream.get())), env,
                    "Generate", arrived),
      prompt(std::move(prompt_in)),
      options(std::move(options_in)),
      stream_(std::move(stream)) {}

bool GenerateCall::cancelled() const { return stream_->gone() || context_->IsCancelled(); }

void GenerateCall::Respond(const grpc::Status& status) { stream_->Complete(status); }

bool GenerateCall::Send(v1::GenerateResponse message) { return stream_->Push(std::move(message)); }

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

void RunTranslate(const std::vector<TranslateCall*>& calls, Metrics* metrics,
                  int64_t memory_budget_bytes) {
  const ServedModel& model = calls.front()->model();
  TokenBatch sources;
  std::vector<size_t> owner;  // sentence -> call
  for (size_t c = 0; c < calls.size(); ++c) {
    for (const auto& s : calls[c]->sources) {
      sources.push_back(s);
      owner.push_back(c);
    }
  }
  std::vector<char> stopped(calls.size(), 0);  // the call's work ended early
  const auto results = model.TranslateTokens(
      sources, calls.front()->options,
      [&](int64_t sentence) {
        const size_t c = owner[static_cast<size_t>(sentence)];
        if (calls[c]->ShouldStop()) stopped[c] = 1;
        return stopped[c] != 0;
      },
      memory_budget_bytes);
  int64_t generated = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    auto* translation = calls[owner[i]]->response->add_translations();
    for (const auto& h : results[i]) {
      auto* out = translation->add_hypotheses();
      out->set_text(h.text);
      out->set_score(static_cast<float>(h.score));
      for (const auto& t : h.tokens) out->add_tokens(t);
    }
    if (!results[i].empty()) generated += results[i].front().token_count;
  }
  metrics->AddTokens(model.name(), "generated", generated);
  for (size_t c = 0; c < calls.size(); ++c) {
    TranslateCall* call = calls[c];
    call->response->set_model(model.name());
    call->response->set_version(model.version());
    call->response->set_norm(model.norm_label());
    call->Finish(stopped[c] ? call->StoppedStatus() : grpc::Status::OK);
  }
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

void RunGenerate(GenerateCall* call, Metrics* metrics) {
  const ServedModel& model = call->model();
  const GenerationResult result =
      model.Generate(call->prompt, call->options, [call](const std::string& delta) {
        v1::GenerateResponse piece;
        piece.set_text(delta);
        return call->Send(std::move(piece)) && !call->ShouldStop();
      });
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
}

}  // namespace

void RunBatch(std::vector<std::shared_ptr<QueuedRequest>>& batch, Metrics* metrics,
              int64_t memory_budget_bytes) {
  auto* first = static_cast<InferenceCall*>(batch.front().get());
  const ServedModel& model = first->model();
  int64_t source_tokens = 0;
  for (const auto& r : batch) source_tokens += r->tokens();
  metrics->AddTokens(model.name(), "source", source_tokens);
  const auto start = Clock::now();
  try {
    switch (first->kind()) {
      case InferenceCall::Kind::kTranslate:
        RunTranslate(Downcast<TranslateCall>(batch), metrics, memory_budget_bytes);
        break;
      case InferenceCall::Kind::kScore:
        RunScore(Downcast<ScoreCall>(batch), memory_budget_bytes);
        break;
      case InferenceCall::Kind::kGenerate:
        RunGenerate(static_cast<GenerateCall*>(first), metrics);
        break;
    }
  } catch (const std::exception& e) {
    // The inputs were checked at arrival, so this is the server's fault, not the client's.
    for (auto& r : batch) {
      static_cast<InferenceCall*>(r.get())->Finish(
          grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what()));
    }
  }
  metrics->RecordCompute(model.name(), model.norm_label(),
                         std::chrono::duration<double>(Clock::now() - start).count());
}

}  // namespace normserve
