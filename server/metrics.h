// The server's Prometheus metrics (DESIGN.md section 6) and the HTTP endpoint that exposes
// them at /metrics.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Exposer;
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace normserve {

class Metrics {
 public:
  // Listens on `address` ("host:port", port 0 picks a free one); empty means no endpoint.
  explicit Metrics(const std::string& address);
  ~Metrics();

  // The bound port, or 0 without an endpoint.
  int port() const;

  void RecordRequest(const std::string& model, const std::string& version,
                     const std::string& norm, const std::string& rpc, const std::string& code,
                     double seconds);
  void SetModelReady(const std::string& model, const std::string& version,
                     const std::string& norm, bool ready);
  void RecordModelLoad(const std::string& model, double seconds);
  void RecordModelLoadFailure(const std::string& model);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_duration_;
  prometheus::Family<prometheus::Gauge>* model_ready_;
  prometheus::Family<prometheus::Histogram>* model_load_duration_;
  prometheus::Family<prometheus::Counter>* model_load_failures_;
};

}  // namespace normserve
