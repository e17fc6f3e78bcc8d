// The server's Prometheus metrics (DESIGN.md section 6), served at /metrics by a
// MetricsEndpoint (metrics_endpoint.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace normserve {

class MetricsEndpoint;

class Metrics {
 public:
  // Listens on `address` ("host:port", port 0 picks a free one); empty means no endpoint.
  explicit Metrics(const std::string& address);
  ~Metrics();

  // The bound port, or 0 without an endpoint.
  int port() const;

  void RecordRequest(const std::string& model, const std::string& version, const std::string& norm,
                     const std::string& rpc, const std::string& code, double seconds);
  void SetModelReady(const std::string& model, const std::string& version, const std::string& norm,
                     bool ready);
  void RecordModelLoad(const std::string& model, double seconds);
  void RecordModelLoadFailure(const std::string& model);
  // Creates the model's failure counter at 0, so that the first failure is an increase.
  void DeclareModel(const std::string& model);

  // The serving path (the batcher and the calls it runs).
  void RecordQueueTime(const std::string& model, double seconds);
  void RecordBatch(const std::string& model, int64_t requests, int64_t tokens);
  void RecordCompute(const std::string& model, const std::string& norm, double seconds);
  void SetQueueDepth(const std::string& model, int64_t depth);
  // The decoding engine (models/decoding/step_engine.h): Generate's token latencies, and the
  // sequences running and the requests waiting for memory after each step.
  void RecordTimeToFirstToken(const std::string& model, const std::string& norm, double seconds);
  void RecordInterTokenLatency(const std::string& model, const std::string& norm, double seconds);
  void SetSequences(const std::string& model, const std::string& instance, int64_t running,
                    int64_t waiting);
  // The model's max_queue_size, so that dashboards and alerts can relate the depth to it.
  void SetMaxQueueSize(const std::string& model, int64_t size);
  void AddInflight(int64_t delta);
  // kind: "source" (tokens read) or "generated" (tokens written).
  void AddTokens(const std::string& model, const std::string& kind, int64_t count);
  // Shadow traffic (server/shadow_traffic.h): a copy of a request answered by `primary` that
  // was run on `shadow` (or dropped, or failed), and how its answer compared.
  struct ShadowPair {
    std::string primary, shadow, norm, rpc;  // norm: the shadow's
  };
  enum class ShadowOutcome { kCompared, kDropped, kFailed };
  void RecordShadow(const ShadowPair& pair, ShadowOutcome outcome);
  // Translate and Generate: the share of the request's texts that came out identical.
  void RecordShadowAgreement(const ShadowPair& pair, double ratio, double seconds);
  // Score: the mean absolute difference of the token log-probabilities.
  void RecordShadowLogprobDiff(const ShadowPair& pair, double mean_abs_diff, double seconds);
  // The norm layers' own time inside a forward (models/norm/norm_timing.h).
  void RecordNormTime(const std::string& norm, const std::string& device, const std::string& dtype,
                      double seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsEndpoint> endpoint_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_duration_;
  prometheus::Family<prometheus::Gauge>* model_ready_;
  prometheus::Family<prometheus::Histogram>* model_load_duration_;
  prometheus::Family<prometheus::Counter>* model_load_failures_;
  prometheus::Family<prometheus::Histogram>* queue_duration_;
  prometheus::Family<prometheus::Histogram>* compute_duration_;
  prometheus::Family<prometheus::Histogram>* time_to_first_token_;
  prometheus::Family<prometheus::Histogram>* inter_token_latency_;
  prometheus::Family<prometheus::Gauge>* running_sequences_;
  prometheus::Family<prometheus::Gauge>* waiting_requests_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Histogram>* batch_tokens_;
  prometheus::Family<prometheus::Gauge>* queue_depth_;
  prometheus::Family<prometheus::Gauge>* max_queue_size_;
  prometheus::Gauge* inflight_;
  prometheus::Family<prometheus::Counter>* tokens_;
  prometheus::Family<prometheus::Histogram>* norm_duration_;
  prometheus::Family<prometheus::Counter>* shadow_requests_;
  prometheus::Family<prometheus::Histogram>* shadow_agreement_;
  prometheus::Family<prometheus::Histogram>* shadow_logprob_diff_;
  prometheus::Family<prometheus::Histogram>* shadow_duration_;
};

}  // namespace normserve
