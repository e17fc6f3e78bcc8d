#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cmath>

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

}  // namespace

Metrics::Metrics(const std::string& address)
    : registry_(std::make_shared<prometheus::Registry>()) {
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
  if (!address.empty()) {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
    exposer_->RegisterCollectable(registry_);
  }
}

Metrics::~Metrics() = default;

int Metrics::port() const {
  if (!exposer_) return 0;
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::RecordRequest(const std::string& model, const std::string& version,
                            const std::string& norm, const std::string& rpc,
                            const std::string& code, double seconds) {
  requests_->Add({{"model", model}, {"version", version}, {"norm", norm}, {"rpc", rpc}, {"code", code}})
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

void Metrics::RecordModelLoadFailure(const std::string& model) {
  model_load_failures_->Add({{"model", model}}).Increment();
}

}  // namespace normserve
