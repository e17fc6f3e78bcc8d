// The HTTP endpoint that serves the metrics text at /metrics (cpp-httplib), bounded so that
// stray, malformed, oversized, slow or half-open clients can neither crash the server nor
// starve a scrape.
#pragma once

#include <functional>
#include <memory>
#include <string>

namespace normserve {

class BoundedHttpServer;

class MetricsEndpoint {
 public:
  // Produces the exposition text of one scrape; called on the endpoint's worker threads.
  using Render = std::function<std::string()>;

  // Listens on `address` ("host:port", "[ipv6]:port", or a bare port for all IPv4
  // interfaces; port 0 picks a free one) and serves until destroyed. Throws
  // std::invalid_argument for a malformed address and std::runtime_error when it cannot bind.
  MetricsEndpoint(const std::string& address, Render render);
  // Stops listening, ends open connections and returns when its threads have ended.
  ~MetricsEndpoint();

  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The bound port.
  int port() const { return port_; }

 private:
  // HTTPS would give it a TLS stream beside its plain socket stream; the routes, the address
  // and the render callback here stay as they are.
  std::unique_ptr<BoundedHttpServer> server_;
  int port_ = 0;
};

}  // namespace normserve
