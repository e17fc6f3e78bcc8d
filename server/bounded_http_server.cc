#include "server/bounded_http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace normserve {
namespace {

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events` (or hung up) or `deadline` passes.
bool WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd entry{fd, events, 0};
    const int ready = poll(&entry, 1, static_cast<int>(left));
    if (ready != -1) return ready > 0;
    if (errno != EINTR) return false;
  }
}

// The numeric address of either end of a connected socket.
void SocketAddress(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  auto* raw = reinterpret_cast<sockaddr*>(&address);
  if ((peer ? getpeername(fd, raw, &length) : getsockname(fd, raw, &length)) != 0) return;
  char host[NI_MAXHOST];
  char service[NI_MAXSERV];
  if (getnameinfo(raw, length, host, sizeof(host), service, sizeof(service),
                  NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    ip = host;
    port = std::atoi(service);
  }
}

// One client connection as httplib reads and writes it. Unlike the library's own socket
// stream, whose timeout restarts with every byte, each request must arrive whole before a
// deadline and within a byte budget.
class BoundedSocketStream final : public httplib::Stream {
 public:
  BoundedSocketStream(int fd, const HttpBounds& bounds) : fd_(fd), bounds_(bounds) {}

  // Gives the next request its deadline and byte budget.
  void StartRequest() {
    deadline_ = Clock::now() + bounds_.request_time;
    budget_ = bounds_.max_request_bytes;
  }
  bool budget_spent() const { return budget_ == 0; }

  bool is_readable() const override {
    return begin_ < end_ || (budget_ > 0 && WaitFor(fd_, POLLIN, deadline_));
  }
  bool is_writable() const override {
    return WaitFor(fd_, POLLOUT, Clock::now() + bounds_.write_time);
  }

  ssize_t read(char* out, size_t size) override {
    if (begin_ == end_) {
      const ssize_t received = Receive();
      if (received <= 0) return received;
      begin_ = 0;
      end_ = static_cast<size_t>(received);
      budget_ -= end_;
    }
    const size_t count = std::min(size, end_ - begin_);
    std::memcpy(out, buffer_.data() + begin_, count);
    begin_ += count;
    return static_cast<ssize_t>(count);
  }

  ssize_t write(const char* data, size_t size) override {
    const Clock::time_point deadline = Clock::now() + bounds_.write_time;
    for (;;) {
      if (!WaitFor(fd_, POLLOUT, deadline)) return -1;
      // Non-blocking: a blocking send of a whole response could outlast the deadline.
      const ssize_t sent = send(fd_, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent >= 0 || (errno != EAGAIN && errno != EINTR)) return sent;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    SocketAddress(fd_, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    SocketAddress(fd_, false, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  // Up to the rest of the budget from the socket: > 0 bytes, 0 at its end, -1 past the
  // deadline or the budget.
  ssize_t Receive() {
    while (budget_ > 0 && WaitFor(fd_, POLLIN, deadline_)) {
      const ssize_t received =
          recv(fd_, buffer_.data(), std::min(buffer_.size(), budget_), MSG_DONTWAIT);
      if (received >= 0 || (errno != EAGAIN && errno != EINTR)) return received;
    }
    return -1;
  }

  const int fd_;
  const HttpBounds& bounds_;
  Clock::time_point deadline_;
  size_t budget_ = 0;
  std::array<char, 4096> buffer_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

struct HostPort {
  std::string host;
  int port;
};

HostPort ParseAddress(const std::string& address, const std::string& what) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? "0.0.0.0" : address.substr(0, colon);
  const std::string port = colon == std::string::npos ? address : address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const bool digits =
      !port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  if (host.empty() || !digits || std::stoi(port) > 65535) {
    throw std::invalid_argument(what + " address '" + address +
                                "': expected host:port, [ipv6]:port or a port (0-65535)");
  }
  return {host, std::stoi(port)};
}

}  // namespace

BoundedHttpServer::BoundedHttpServer(const HttpBounds& bounds) : bounds_(bounds) {
  new_task_queue = [workers = bounds.workers] { return new httplib::ThreadPool(workers); };
  // Advertised in the Keep-Alive header; process_and_close_socket below enforces them.
  set_keep_alive_max_count(bounds.keep_alive_requests);
  set_keep_alive_timeout(
      std::chrono::duration_cast<std::chrono::seconds>(bounds.request_time).count());
  // httplib's default adds SO_REUSEPORT, which lets a second process bind the same port and
  // silently take a share of the requests.
  set_socket_options([](socket_t fd) {
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
}

BoundedHttpServer::~BoundedHttpServer() { Stop(); }

int BoundedHttpServer::Bind(const std::string& address, const std::string& what) {
  const HostPort bind = ParseAddress(address, what);
  const int port = bind.port == 0 ? bind_to_any_port(bind.host)
                                  : (bind_to_port(bind.host, bind.port) ? bind.port : -1);
  if (port <= 0) {
    throw std::runtime_error("cannot listen for " + what + " on " + address +
                             ": the address is not local or the port is taken");
  }
  return port;
}

void BoundedHttpServer::Start() {
  listener_ = std::thread([this] {
    listen_after_bind();
    listener_done_ = true;
  });
  // httplib ignores stop() until listen_after_bind() has begun: wait for that, so that
  // Stop() cannot be lost.
  while (!is_running() && !listener_done_)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void BoundedHttpServer::Stop() {
  stop();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    // Wakes their workers at once; each closes its own socket.
    for (const int fd : connections_) shutdown(fd, SHUT_RDWR);
  }
  if (listener_.joinable()) listener_.join();
}

bool BoundedHttpServer::process_and_close_socket(socket_t fd) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      close(fd);
      return false;
    }
    connections_.insert(fd);
  }
  // A response goes out in several writes (headers, body); with Nagle's algorithm the last
  // one waited for the client's delayed acknowledgement, 40 ms a request.
  const int yes = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
  BoundedSocketStream stream(fd, bounds_);
  bool served = true;
  for (size_t count = 1; served && count <= bounds_.keep_alive_requests; ++count) {
    stream.StartRequest();
    bool closed = false;
    served = process_request(stream, count == bounds_.keep_alive_requests, closed, nullptr) &&
             !closed && !stream.budget_spent();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    connections_.erase(fd);
  }
  shutdown(fd, SHUT_RDWR);
  close(fd);
  return true;
}

}  // namespace normserve
