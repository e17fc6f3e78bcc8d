// The Open Inference Protocol's HTTP/REST binding (/v2/...), JSON tensors and the binary
// tensor data extension, on a bounded cpp-httplib server (server/bounded_http_server.h). Each
// request becomes the inference.GRPCInferenceService call it means, made over the server's
// in-process channel with the request's `Authorization` header as its token, so that it is
// answered exactly as on gRPC (server/kserve_service.h); gRPC status codes map to HTTP ones.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace normserve {

class BoundedHttpServer;

class KServeHttpEndpoint {
 public:
  // Listens on `address` (as --metrics-address) and serves until destroyed; a request body
  // larger than `max_body_bytes` is refused with 413. Throws std::invalid_argument for a
  // malformed address and std::runtime_error when it cannot bind.
  KServeHttpEndpoint(const std::string& address, std::shared_ptr<grpc::Channel> channel,
                     size_t max_body_bytes);
  ~KServeHttpEndpoint();

  KServeHttpEndpoint(const KServeHttpEndpoint&) = delete;
  KServeHttpEndpoint& operator=(const KServeHttpEndpoint&) = delete;

  int port() const { return port_; }

 private:
  class Routes;  // the handlers (kserve_http.cc)

  std::unique_ptr<Routes> routes_;
  std::unique_ptr<BoundedHttpServer> server_;
  int port_ = 0;
};

}  // namespace normserve
