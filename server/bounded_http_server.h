// An httplib::Server (Debian's cpp-httplib) whose connections are bounded in time and bytes,
// so that stray, malformed, oversized, slow or half-open clients can neither crash the
// process nor hold its workers for long: the metrics endpoint and the Open Inference
// Protocol's HTTP front end both serve on it.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace normserve {

struct HttpBounds {
  // Each request must arrive whole within this time after the server starts waiting for it
  // (idle keep-alive time counts) ...
  std::chrono::milliseconds request_time;
  // ... and within this many bytes, request line, headers and body together.
  size_t max_request_bytes;
  // How long one write may wait for a client that does not read its response.
  std::chrono::milliseconds write_time;
  // Requests on one connection before it is closed.
  size_t keep_alive_requests;
  // Threads serving connections; a connection holds one until it ends.
  size_t workers;
};

class BoundedHttpServer final : public httplib::Server {
 public:
  explicit BoundedHttpServer(const HttpBounds& bounds);
  ~BoundedHttpServer() override;

  // Binds `address` ("host:port", "[ipv6]:port", or a bare port for all IPv4 interfaces; port
  // 0 picks a free one) and returns the port. Throws std::invalid_argument for a malformed
  // address and std::runtime_error when it cannot bind; `what` names the port in both.
  int Bind(const std::string& address, const std::string& what);
  // Serves on a thread of its own until Stop.
  void Start();
  // Stops accepting, ends the open connections and joins the threads.
  void Stop();

 private:
  // Replaces httplib's connection loop (a per-byte read timeout and unbounded headers).
  bool process_and_close_socket(socket_t fd) override;

  const HttpBounds bounds_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  std::mutex mutex_;
  bool stopping_ = false;      // guarded by mutex_
  std::set<int> connections_;  // guarded by mutex_: sockets being served
};

}  // namespace normserve
