// The inference calls as the batcher sees them: each one knows its model version, its cost
// in tokens and how to answer its client. ModelRunner runs them: Score batches as one model
// invocation, Translate and Generate calls on the step engine of their model version.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "models/served_model.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "server/batcher.h"

namespace normserve {

class Metrics;

// Finishes an RPC once, recording its status and duration.
class CallRecord {
 public:
  // `start`: when the call arrived, so its duration covers queues and tokenizing.
  CallRecord(Metrics* metrics, const char* rpc, Clock::time_point start = Clock::now());
  ~CallRecord();
  void Finish(const grpc::Status& status, const ServedModel* model);

 private:
  Metrics* metrics_;
  const char* rpc_;
  Clock::time_point start_;
  bool finished_ = false;
};

// The gRPC deadline of a call on the batcher's clock.
Clock::time_point SteadyDeadline(const grpc::CallbackServerContext* context);

// The end of the shutdown grace period: model work still running then is abandoned within
// one decoding step, and its calls are answered UNAVAILABLE. Never, until a shutdown sets it.
class ShutdownDeadline {
 public:
  void Set(Clock::time_point at) { at_ = at.time_since_epoch().count(); }
  bool Passed() const { return Clock::now().time_since_epoch().count() >= at_; }

 private:
  std::atomic<Clock::rep> at_{Clock::time_point::max().time_since_epoch().count()};
};

// What every call reports to and is stopped by.
struct CallEnvironment {
  Metrics* metrics;
  const ShutdownDeadline* shutdown;
};

class InferenceCall : public QueuedRequest {
 public:
  enum class Kind { kTranslate, kScore, kGenerate };

  // `context` is null for a call no client waits for (a shadow copy, server/shadow_traffic.h):
  // it is not counted as a request, nothing can cancel it, and its deadline is
  // kUnattendedDeadline from now.
  InferenceCall(Kind kind, grpc::CallbackServerContext* context,
                std::shared_ptr<const ServedModel> model, int priority, int64_t tokens,
                const CallEnvironment& env, const char* rpc, Clock::time_point arrived);

  BatchKey batch_key() const override { return {model_.get(), static_cast<int>(kind_)}; }
  int64_t tokens() const override { return tokens_; }
  int priority() const override { return priority_; }
  Clock::time_point deadline() const override { return deadline_; }
  bool cancelled() const override { return context_ != nullptr && context_->IsCancelled(); }
  void Reject(Rejection why, const std::string& message) override;

  Kind kind() const { return kind_; }
  const ServedModel& model() const { return *model_; }
  const std::shared_ptr<const ServedModel>& shared_model() const { return model_; }
  bool finished() const { return finished_; }
  // True once running model work for this call should end: the client is gone or the
  // shutdown grace period is over.
  bool ShouldStop() const { return cancelled() || shutdown_->Passed(); }
  // The status of a call whose work ShouldStop() ended.
  grpc::Status StoppedStatus() const;
  // Answers the client, once: later calls do nothing.
  void Finish(const grpc::Status& status);
  // Runs in Finish, before the client is answered, while the response is whole.
  void OnFinish(std::function<void(const grpc::Status&)> hook) { on_finish_ = std::move(hook); }

  static constexpr std::chrono::seconds kUnattendedDeadline{60};

 protected:
  virtual void Respond(const grpc::Status& status) = 0;

  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<const ServedModel> model_;
  std::optional<CallRecord> record_;  // none without a client

 private:
  const Kind kind_;
  const ShutdownDeadline* const shutdown_;
  const int priority_;
  const int64_t tokens_;
  const Clock::time_point deadline_;
  std::atomic<bool> finished_{false};
  std::function<void(const grpc::Status&)> on_finish_;
};

// The reactor of a Translate or Score call is null for a call without a client.
class TranslateCall : public InferenceCall {
 public:
  TranslateCall(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                std::shared_ptr<const ServedModel> model, int priority, TokenBatch sources,
                TranslationOptions options, v1::TranslateResponse* response,
                const CallEnvironment& env, Clock::time_point arrived);

  TokenBatch sources;
  TranslationOptions options;
  v1::TranslateResponse* response;

 private:
  void Respond(const grpc::Status& status) override;
  grpc::ServerUnaryReactor* reactor_;
};

class ScoreCall : public InferenceCall {
 public:
  ScoreCall(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
            std::shared_ptr<const ServedModel> model, int priority, TokenBatch sources,
            TokenBatch targets, v1::ScoreResponse* response, const CallEnvironment& env,
            Clock::time_point arrived);

  TokenBatch sources;  // empty for language models
  TokenBatch targets;
  v1::ScoreResponse* response;

 private:
  void Respond(const grpc::Status& status) override;
  grpc::ServerUnaryReactor* reactor_;
};

// A Generate stream: the worker pushes text pieces; gRPC writes them one at a time. Null for
// a call without a client.
class GenerateStream;

class GenerateCall : public InferenceCall {
 public:
  GenerateCall(grpc::CallbackServerContext* context, std::shared_ptr<GenerateStream> stream,
               std::shared_ptr<const ServedModel> model, int priority, std::vector<int64_t> prompt,
               GenerationOptions options, const CallEnvironment& env, Clock::time_point arrived);
  bool cancelled() const override;
  // Sends one piece; false once the client is gone.
  bool Send(v1::GenerateResponse message);
  // A token was decoded: its time since arrival (the first) or since the previous token.
  void RecordToken(Metrics* metrics);
  // Keeps the text sent so far, for text().
  void KeepText() { keep_text_ = true; }
  const std::string& text() const { return text_; }

  std::vector<int64_t> prompt;
  GenerationOptions options;

 private:
  void Respond(const grpc::Status& status) override;
  std::shared_ptr<GenerateStream> stream_;
  bool keep_text_ = false;
  std::string text_;  // only the engine's thread touches it
  const Clock::time_point arrived_;
  Clock::time_point last_token_at_{};  // none yet; only the engine's thread touches it
};

// The gRPC side of a Generate stream. Owned by gRPC until OnDone.
class GenerateStream : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                       public std::enable_shared_from_this<GenerateStream> {
 public:
  static std::shared_ptr<GenerateStream> Create();
  // The reactor to return from the handler.
  grpc::ServerWriteReactor<v1::GenerateResponse>* reactor() { return this; }

  bool Push(v1::GenerateResponse message);
  void Complete(const grpc::Status& status);
  bool gone() const { return gone_; }

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateStream() = default;
  void FinishIfDoneLocked();

  std::mutex mutex_;
  std::deque<v1::GenerateResponse> pending_;
  bool writing_ = false;
  std::optional<grpc::Status> final_status_;
  bool finish_called_ = false;
  std::atomic<bool> gone_{false};
  std::shared_ptr<GenerateStream> self_;  // keeps this alive until OnDone
};

// The runner of one model's batcher: Score batches run at once, as one step of the loop;
// Translate and Generate calls join the step engine of their model version and are answered
// as their sequences finish (Generate streams each token's text as its step ends).
class ModelRunner : public BatchRunner {
 public:
  // The runner of model instance `instance` (0-based) of a model served with `config`.
  ModelRunner(Metrics* metrics, const BatcherConfig& config, int instance);
  ~ModelRunner() override;

  void Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) override;
  bool Step() override;
  RunnerLoad load() const override { return load_; }
  void OnExecutorStart() override;

 private:
  struct Engine;
  // The engine of the call's model version, with the call counted as running on it.
  Engine& Track(const std::shared_ptr<InferenceCall>& call);
  void Admit(const std::shared_ptr<TranslateCall>& call);
  void Admit(const std::shared_ptr<GenerateCall>& call);

  Metrics* const metrics_;
  const int64_t memory_budget_bytes_;
  const int threads_;
  const std::string instance_;  // its metrics label
  // One engine per loaded model version with work; dropped when idle, so that an unloaded
  // version is freed.
  std::map<const ServedModel*, std::unique_ptr<Engine>> engines_;
  RunnerLoad load_;
};

}  // namespace normserve
