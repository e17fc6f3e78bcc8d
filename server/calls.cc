#include "server/calls.h"

#include "models/errors.h"
#include "server/metrics.h"
#include "proto/status_names.h"

namespace normserve {

CallRecord::CallRecord(Metrics* metrics, const char* rpc)
    : metrics_(metrics), rpc_(rpc), start_(Clock::now()) {
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

InferenceCall::InferenceCall(grpc::CallbackServerContext* context,
                             std::shared_ptr<const ServedModel> model, int priority, int64_t tokens,
                             std::string batch_key, Metrics* metrics, const char* rpc)
    : context_(context),
      model_(std::move(model)),
      record_(metrics, rpc),
      priority_(priority),
      tokens_(tokens),
      batch_key_(std::move(batch_key)),
      deadline_(SteadyDeadline(context)) {}

void InferenceCall::Finish(const grpc::Status& status) {
  if (finished_.exchange(true)) return;
  record_.Finish(status, model_.get());
  Respond(status);
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

std::string TranslateKey(const ServedModel& model, const TranslationOptions& o) {
  return "translate|" + ModelKey(model) + "|" + std::to_string(o.beam_size) + "," +
         std::to_string(o.n_best) + "," + std::to_string(o.length_penalty) + "," +
         std::to_string(o.max_length_a) + "," + std::to_string(o.max_length_b) + "," +
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
                             v1::TranslateResponse* response_in, Metrics* metrics)
    : InferenceCall(context, model, priority, CountTokens(sources_in),
                    TranslateKey(*model, options_in), metrics, "Translate"),
      sources(std::move(sources_in)),
      options(options_in),
      response(response_in),
      reactor_(reactor) {}

void TranslateCall::Respond(const grpc::Status& status) { reactor_->Finish(status); }

ScoreCall::ScoreCall(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                     std::shared_ptr<const ServedModel> model, int priority, TokenBatch sources_in,
                     TokenBatch targets_in, v1::ScoreResponse* response_in, Metrics* metrics)
    : InferenceCall(context, model, priority, CountTokens(sources_in) + CountTokens(targets_in),
                    "score|" + ModelKey(*model), metrics, "Score"),
      sources(std::move(sources_in)),
      targets(std::move(targets_in)),
      response(response_in),
      reactor_(reactor) {}

void ScoreCall::Respond(const grpc::Status& status) { reactor_->Finish(status); }

GenerateCall::GenerateCall(grpc::CallbackServerContext* context,
                           std::shared_ptr<GenerateStream> stream,
                           std::shared_ptr<const ServedModel> model, int priority,
                           std::vector<int64_t> prompt_in, GenerationOptions options_in,
                           Metrics* metrics)
    : InferenceCall(context, model, priority, static_cast<int64_t>(prompt_in.size()) + 1,
                    // Each stream decodes alone: a key no other call shares.
                    "generate|" + std::to_string(reinterpret_cast<uintptr_t>(stream.get())),
                    metrics, "Generate"),
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

void RunTranslate(const std::vector<TranslateCall*>& calls, Metrics* metrics) {
  const ServedModel& model = calls.front()->model();
  TokenBatch sources;
  std::vector<size_t> owner;  // sentence -> call
  for (size_t c = 0; c < calls.size(); ++c) {
    for (const auto& s : calls[c]->sources) {
      sources.push_back(s);
      owner.push_back(c);
    }
  }
  const auto results = model.TranslateTokens(
      sources, calls.front()->options,
      [&](int64_t sentence) { return calls[owner[static_cast<size_t>(sentence)]]->cancelled(); });
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
  for (TranslateCall* call : calls) {
    call->response->set_model(model.name());
    call->response->set_version(model.version());
    call->response->set_norm(model.norm_label());
    call->Finish(call->cancelled()
                     ? grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call")
                     : grpc::Status::OK);
  }
}

void RunScore(const std::vector<ScoreCall*>& calls) {
  const ServedModel& model = calls.front()->model();
  TokenBatch sources, targets;
  for (const ScoreCall* call : calls) {
    sources.insert(sources.end(), call->sources.begin(), call->sources.end());
    targets.insert(targets.end(), call->targets.begin(), call->targets.end());
  }
  const auto scores = model.ScoreTokens(sources, targets);
  size_t next = 0;
  for (ScoreCall* call : calls) {
    call->response->set_model(model.name());
    call->response->set_version(model.version());
    call->response->set_norm(model.norm_label());
    for (size_t i = 0; i < call->targets.size(); ++i)
      FillScore(scores[next++], call->response->add_results());
    call->Finish(grpc::Status::OK);
  }
}

void RunGenerate(GenerateCall* call, Metrics* metrics) {
  const ServedModel& model = call->model();
  const GenerationResult result =
      model.Generate(call->prompt, call->options, [call](const std::string& delta) {
        v1::GenerateResponse piece;
        piece.set_text(delta);
        return call->Send(std::move(piece)) && !call->cancelled();
      });
  metrics->AddTokens(model.name(), "generated", result.tokens);
  if (result.finish_reason == "cancelled") {
    call->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call"));
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

void RunBatch(std::vector<std::shared_ptr<QueuedRequest>>& batch, Metrics* metrics) {
  auto* first = static_cast<InferenceCall*>(batch.front().get());
  const ServedModel& model = first->model();
  int64_t source_tokens = 0;
  for (const auto& r : batch) source_tokens += r->tokens();
  metrics->AddTokens(model.name(), "source", source_tokens);
  const auto start = Clock::now();
  try {
    const std::string& key = first->batch_key();
    if (key.rfind("translate|", 0) == 0) {
      RunTranslate(Downcast<TranslateCall>(batch), metrics);
    } else if (key.rfind("score|", 0) == 0) {
      RunScore(Downcast<ScoreCall>(batch));
    } else {
      RunGenerate(static_cast<GenerateCall*>(first), metrics);
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
