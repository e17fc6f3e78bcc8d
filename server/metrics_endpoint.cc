#include "server/metrics_endpoint.h"

#include "server/bounded_http_server.h"

namespace normserve {
namespace {

using HandlerResponse = httplib::Server::HandlerResponse;

constexpr char kPath[] = "/metrics";
// The Prometheus text exposition format.
constexpr char kContentType[] = "text/plain; version=0.0.4";

// Scrapers send their request at once, so a request that has not fully arrived this long
// after the server started waiting for it comes from a client that is gone, stuck or hostile.
// Idle keep-alive time counts too: Prometheus scrapes every 15 s or so and reconnects anyway.
constexpr auto kRequestTime = std::chrono::seconds(3);
// How long one write may wait for a client that does not read its response.
constexpr auto kWriteTime = std::chrono::seconds(3);
// Requests on one connection before it is closed: a hostile client holds a worker for at most
// kKeepAliveRequests * kRequestTime, plus the time its responses take to write.
constexpr size_t kKeepAliveRequests = 5;
// A scrape's request is a few hundred bytes. cpp-httplib limits the request line and each
// header line to 8 KiB but not the number of header lines; this bounds the whole request, body
// included (GET's body goes unread, other methods are refused before theirs).
constexpr size_t kMaxRequestBytes = 16 * 1024;
// A connection holds a worker until it ends, at most the bounds above. A scrape needs one
// worker for milliseconds; two Prometheus replicas, a probe and a curl need a few more. 16
// leave a scrape a free worker while up to 15 idle or half-open connections sit out their
// time, and cost only idle threads.
constexpr size_t kWorkers = 16;

// Only GET and HEAD of /metrics reach the handler. The body of a refused request is never
// read; the connection then ends at its byte budget, its deadline or its request count.
HandlerResponse RefuseAllButMetrics(const httplib::Request& request, httplib::Response& response) {
  if (request.path != kPath) {
    response.status = 404;
    response.set_content(std::string("not found: the metrics are at ") + kPath + "\n",
                         "text/plain");
    return HandlerResponse::Handled;
  }
  if (request.method != "GET" && request.method != "HEAD") {
    response.status = 405;
    response.set_header("Allow", "GET, HEAD");
    response.set_content(std::string("method not allowed: ") + kPath + " answers GET and HEAD\n",
                         "text/plain");
    return HandlerResponse::Handled;
  }
  return HandlerResponse::Unhandled;
}

// A scrape's bounds: a hostile client holds a worker for at most
// keep_alive_requests * request_time, plus the time its responses take to write.
constexpr HttpBounds kScrapeBounds{kRequestTime, kMaxRequestBytes, kWriteTime, kKeepAliveRequests,
                                   kWorkers};

}  // namespace

MetricsEndpoint::MetricsEndpoint(const std::string& address, Render render)
    : server_(std::make_unique<BoundedHttpServer>(kScrapeBounds)) {
  server_->set_pre_routing_handler(RefuseAllButMetrics);
  server_->Get(kPath,
               [render = std::move(render)](const httplib::Request&, httplib::Response& response) {
                 response.set_content(render(), kContentType);
               });
  port_ = server_->Bind(address, "metrics");
  server_->Start();
}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace normserve
