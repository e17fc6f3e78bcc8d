#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cmath>

#include "server/metrics_endpoint.h"

namespace normserve {
namespace {

// 0.5 ms .. ~65 s in factors of 2: covers a one-token score and a long beam search.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto buckets = [] {
    prometheus::Histogram::BucketBoundaries b;
    for (int i = 0; i < 18; ++i) b.push_back(0.0005 * std::pow(2.0, i));
    return b;
  }();
  return buckets;
}

// Powers of two from 1 to 1024: requests per batch.
const prometheus::Histogram::BucketBoundaries& SizeBuckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {1,  2,   4,   8,   16,  32,
                                                                  64, 128, 256, 512, 1024};
  return buckets;
}

// Tokens per batch: 8 .. 65536.
const prometheus::Histogram::BucketBoundaries& TokenBuckets() {
  static const auto buckets = [] {
    prometheus::Histogram::BucketBoundaries b;
    for (int i = 3; i <= 16; ++i) b.push_back(std::pow(2.0, i));
    return b;
  }();
  return buckets;
}

// Norm layers take microseconds: 1 us .. ~0.5 s.
const prometheus::Histogram::BucketBoundaries& NormBuckets() {
  static const auto buckets = [] {
    prometheus::Histogram::BucketBoundaries b;
    for (int i = 0; i < 20; ++i) b.push_back(1e-6 * std::pow(2.0, i));
    return b;
  }();
  return buckets;
}

// The share of a request's texts that agree: 0 .. 1.
const prometheus::Histogram::BucketBoundaries& RatioBuckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {0,    0.5,  0.8,   0.9,
                                                                  0.95, 0.99, 0.999, 1};
  return buckets;
}

// Log-probability differences: 1e-7 (float rounding) .. 1 in factors of 10.
const prometheus::Histogram::BucketBoundaries& LogprobDiffBuckets() {
  static const prometheus::Histogram::BucketBoundaries buckets = {1e-7, 1e-6, 1e-5, 1e-4,
                                                                  1e-3, 1e-2, 1e-1, 1};
  return buckets;
}

}  // namespace

Metrics::Metrics(const std::string& address) : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("normserve_requests_total")
                   .Help("RPCs finished, by model, version, norm variant, RPC and status code")
                   .Register(*registry_);
  request_duration_ = &prometheus::BuildHistogram()
                           .Name("normserve_request_duration_seconds")
                           .Help("Time from receiving an RPC to its status, in the server")
                           .Register(*registry_);
  model_ready_ = &prometheus::BuildGauge()
                      .Name("normserve_model_ready")
                      .Help("1 while a model version is loaded and serving")
                      .Register(*registry_);
  model_load_duration_ = &prometheus::BuildHistogram()
                              .Name("normserve_model_load_duration_seconds")
                              .Help("Time to load a model version, weights and tokenizers")
                              .Register(*registry_);
  model_load_failures_ = &prometheus::BuildCounter()
                              .Name("normserve_model_load_failures_total")
                              .Help("Model versions that failed to load")
                              .Register(*registry_);
  queue_duration_ = &prometheus::BuildHistogram()
                         .Name("normserve_queue_duration_seconds")
                         .Help("Time requests wait in the batcher's queue")
                         .Register(*registry_);
  compute_duration_ = &prometheus::BuildHistogram()
                           .Name("normserve_compute_duration_seconds")
                           .Help(
                               "Time of one model step: a Score batch, or one decoding step "
                               "of every live Translate and Generate sequence")
                           .Register(*registry_);
  time_to_first_token_ = &prometheus::BuildHistogram()
                              .Name("normserve_time_to_first_token_seconds")
                              .Help("Generate: from the call's arrival to its first token")
                              .Register(*registry_);
  inter_token_latency_ = &prometheus::BuildHistogram()
                              .Name("normserve_inter_token_latency_seconds")
                              .Help("Generate: between consecutive tokens of a stream")
                              .Register(*registry_);
  running_sequences_ = &prometheus::BuildGauge()
                            .Name("normserve_running_sequences")
                            .Help("Sentences and streams in the model's decoding steps")
                            .Register(*registry_);
  waiting_requests_ = &prometheus::BuildGauge()
                           .Name("normserve_waiting_requests")
                           .Help(
                               "Requests taken from the queue that wait for the decoding "
                               "engine's memory budget")
                           .Register(*registry_);
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("normserve_batch_size")
                     .Help("Requests per executed batch")
                     .Register(*registry_);
  batch_tokens_ = &prometheus::BuildHistogram()
                       .Name("normserve_batch_tokens")
                       .Help("Input tokens per executed batch")
                       .Register(*registry_);
  queue_depth_ = &prometheus::BuildGauge()
                      .Name("normserve_queue_depth")
                      .Help("Requests waiting in the batcher's queue")
                      .Register(*registry_);
  max_queue_size_ = &prometheus::BuildGauge()
                         .Name("normserve_max_queue_size")
                         .Help("The model's queue limit (max_queue_size)")
                         .Register(*registry_);
  inflight_ = &prometheus::BuildGauge()
                   .Name("normserve_inflight_requests")
                   .Help("RPCs received and not yet answered")
                   .Register(*registry_)
                   .Add({});
  tokens_ = &prometheus::BuildCounter()
                 .Name("normserve_tokens_total")
                 .Help("Tokens processed: kind=source (read) or generated (written)")
                 .Register(*registry_);
  norm_duration_ = &prometheus::BuildHistogram()
                        .Name("normserve_norm_duration_seconds")
                        .Help("Time of the norm layers within one sampled forward pass")
                        .Register(*registry_);
  shadow_requests_ = &prometheus::BuildCounter()
                          .Name("normserve_shadow_requests_total")
                          .Help(
                              "Copies of answered variant-group requests for a shadow member, "
                              "by outcome: compared, dropped (its queue was full) or failed")
                          .Register(*registry_);
  shadow_agreement_ = &prometheus::BuildHistogram()
                           .Name("normserve_shadow_agreement_ratio")
                           .Help(
                               "Translate and Generate: per request copy, the share of texts "
                               "whose shadow output equals the primary's")
                           .Register(*registry_);
  shadow_logprob_diff_ = &prometheus::BuildHistogram()
                              .Name("normserve_shadow_logprob_abs_diff")
                              .Help(
                                  "Score: per request copy, the mean absolute difference of "
                                  "token log-probabilities between shadow and primary")
                              .Register(*registry_);
  shadow_duration_ = &prometheus::BuildHistogram()
                          .Name("normserve_shadow_duration_seconds")
                          .Help("Time of a shadow copy from its queue to its answer")
                          .Register(*registry_);
  if (!address.empty()) {
    endpoint_ = std::make_unique<MetricsEndpoint>(address, [registry = registry_] {
      return prometheus::TextSerializer().Serialize(registry->Collect());
    });
  }
}

Metrics::~Metrics() = default;

int Metrics::port() const { return endpoint_ ? endpoint_->port() : 0; }

void Metrics::RecordRequest(const std::string& model, const std::string& version,
                            const std::string& norm, const std::string& rpc,
                            const std::string& code, double seconds) {
  requests_
      ->Add({{"model", model}, {"version", version}, {"norm", norm}, {"rpc", rpc}, {"code", code}})
      .Increment();
  request_duration_->Add({{"model", model}, {"norm", norm}, {"rpc", rpc}}, LatencyBuckets())
      .Observe(seconds);
}

void Metrics::SetModelReady(const std::string& model, const std::string& version,
                            const std::string& norm, bool ready) {
  model_ready_->Add({{"model", model}, {"version", version}, {"norm", norm}}).Set(ready ? 1 : 0);
}

void Metrics::RecordModelLoad(const std::string& model, double seconds) {
  model_load_duration_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::DeclareModel(const std::string& model) {
  model_load_failures_->Add({{"model", model}});
}

void Metrics::RecordModelLoadFailure(const std::string& model) {
  model_load_failures_->Add({{"model", model}}).Increment();
}

}  // namespace normserve

namespace normserve {

void Metrics::RecordQueueTime(const std::string& model, double seconds) {
  queue_duration_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::RecordBatch(const std::string& model, int64_t requests, int64_t tokens) {
  batch_size_->Add({{"model", model}}, SizeBuckets()).Observe(static_cast<double>(requests));
  batch_tokens_->Add({{"model", model}}, TokenBuckets()).Observe(static_cast<double>(tokens));
}

void Metrics::RecordCompute(const std::string& model, const std::string& norm, double seconds) {
  compute_duration_->Add({{"model", model}, {"norm", norm}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::RecordTimeToFirstToken(const std::string& model, const std::string& norm,
                                     double seconds) {
  time_to_first_token_->Add({{"model", model}, {"norm", norm}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::RecordInterTokenLatency(const std::string& model, const std::string& norm,
                                      double seconds) {
  inter_token_latency_->Add({{"model", model}, {"norm", norm}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::SetSequences(const std::string& model, const std::string& instance, int64_t running,
                           int64_t waiting) {
  running_sequences_->Add({{"model", model}, {"model_instance", instance}})
      .Set(static_cast<double>(running));
  waiting_requests_->Add({{"model", model}, {"model_instance", instance}})
      .Set(static_cast<double>(waiting));
}

void Metrics::SetQueueDepth(const std::string& model, int64_t depth) {
  queue_depth_->Add({{"model", model}}).Set(static_cast<double>(depth));
}

void Metrics::SetMaxQueueSize(const std::string& model, int64_t size) {
  max_queue_size_->Add({{"model", model}}).Set(static_cast<double>(size));
}

void Metrics::AddInflight(int64_t delta) { inflight_->Increment(static_cast<double>(delta)); }

void Metrics::AddTokens(const std::string& model, const std::string& kind, int64_t count) {
  tokens_->Add({{"model", model}, {"kind", kind}}).Increment(static_cast<double>(count));
}

void Metrics::RecordNormTime(const std::string& norm, const std::string& device,
                             const std::string& dtype, double seconds) {
  norm_duration_->Add({{"norm", norm}, {"device", device}, {"dtype", dtype}}, NormBuckets())
      .Observe(seconds);
}

namespace {

prometheus::Labels ShadowLabels(const Metrics::ShadowPair& p) {
  return {{"primary", p.primary}, {"shadow", p.shadow}, {"norm", p.norm}, {"rpc", p.rpc}};
}

const char* OutcomeName(Metrics::ShadowOutcome outcome) {
  switch (outcome) {
    case Metrics::ShadowOutcome::kCompared:
      return "compared";
    case Metrics::ShadowOutcome::kDropped:
      return "dropped";
    case Metrics::ShadowOutcome::kFailed:
      return "failed";
  }
  return "failed";
}

}  // namespace

void Metrics::RecordShadow(const ShadowPair& pair, ShadowOutcome outcome) {
  prometheus::Labels labels = ShadowLabels(pair);
  labels["outcome"] = OutcomeName(outcome);
  shadow_requests_->Add(labels).Increment();
}

void Metrics::RecordShadowAgreement(const ShadowPair& pair, double ratio, double seconds) {
  shadow_agreement_->Add(ShadowLabels(pair), RatioBuckets()).Observe(ratio);
  shadow_duration_->Add(ShadowLabels(pair), LatencyBuckets()).Observe(seconds);
}

void Metrics::RecordShadowLogprobDiff(const ShadowPair& pair, double mean_abs_diff,
                                      double seconds) {
  shadow_logprob_diff_->Add(ShadowLabels(pair), LogprobDiffBuckets()).Observe(mean_abs_diff);
  shadow_duration_->Add(ShadowLabels(pair), LatencyBuckets()).Observe(seconds);
}

}  // namespace normserve
