// Drives load at normserved: a closed loop of C workers with one request each in flight, or
// an open loop of Poisson arrivals at R requests/s.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/bench/stats.h"
#include "client/bench/texts.h"
#include "normserve/v1/normserve.grpc.pb.h"

namespace normserve::bench {

enum class Rpc { kTranslate, kScore };

struct LoadConfig {
  // Requests go round-robin over these (one HTTP/2 connection each).
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::string model;
  Rpc rpc = Rpc::kTranslate;
  bool pairs = false;  // score source/target pairs (a transformer_mt model), not texts
  std::vector<TextPair> texts;
  int batch = 1;                 // texts per request
  std::optional<uint32_t> beam;  // unset: the server's default
  double warmup_s = 1;
  // Exactly one of the two: a step lasts duration_s after the warmup, or sends `requests`.
  std::optional<double> duration_s;
  std::optional<int64_t> requests;
  int64_t timeout_ms = 30000;
  int max_outstanding = 4096;  // open loop: arrivals beyond this many in flight are dropped
  uint64_t seed = 1;           // of the open loop's arrival times
  std::string token;           // bearer token sent with every request; empty: none
  const std::atomic<bool>* stop = nullptr;  // set (by SIGINT) to end the step early
};

class LoadRunner {
 public:
  explicit LoadRunner(LoadConfig config);
  ~LoadRunner();

  // Sends one request and waits for it: the check before any step that the model answers.
  grpc::Status Probe();

  // Closed loop. With a duration, counts the responses that complete inside the window
  // [warmup end, warmup end + duration] and divides by its length. With a request count,
  // sends exactly that many after the warmup and divides by the time from the warmup's end to
  // the last response. Latency runs from send to response.
  StepStats RunConcurrency(int concurrency);

  // Open loop. Arrivals are a Poisson process; each request is sent at its scheduled time
  // whatever is outstanding, and its latency runs from that scheduled time, so a client that
  // falls behind or a queueing server shows in the latencies (no coordinated omission). Every
  // arrival scheduled after the warmup is measured (or counted as dropped), and the step waits
  // for its response; throughputs divide by the time from the warmup's end to the later of
  // the window's end and the last response.
  StepStats RunRate(double rate);

 private:
  struct AsyncCall;
  struct OpenLoop;

  v1::NormServe::Stub& StubFor(size_t i) { return *stubs_[i % stubs_.size()]; }
  size_t NextRequest() { return next_request_.fetch_add(1) % texts_count_; }
  grpc::Status CallSync(v1::NormServe::Stub& stub, size_t request, int64_t* tokens);
  void StartAsync(const std::shared_ptr<AsyncCall>& call);
  bool Stopped() const { return config_.stop != nullptr && config_.stop->load(); }

  LoadConfig config_;
  std::vector<std::unique_ptr<v1::NormServe::Stub>> stubs_;
  std::vector<v1::TranslateRequest> translate_requests_;
  std::vector<v1::ScoreRequest> score_requests_;
  size_t texts_count_ = 0;
  std::atomic<size_t> next_request_{0};
};

}  // namespace normserve::bench
