// The dynamic batcher of one served model: a bounded, prioritized queue, a scheduler thread
// that forms batches of compatible requests of similar length, and an executor thread that
// runs them one at a time. The scheduler keeps expiring queued requests while a batch runs.
//
// A batch is run when it is full (max_batch_size requests or max_batch_tokens tokens) or when
// its oldest request has waited max_queue_delay. Requests whose deadline passes or whose
// client cancels while they wait leave the queue with that outcome. No gRPC here: requests
// report their fate through virtual calls, so the batcher is tested on its own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace normserve {

struct BatcherConfig {
  int64_t max_batch_size = 16;      // requests per batch
  int64_t max_batch_tokens = 4096;  // tokens per batch (a single larger request still runs)
  std::chrono::microseconds max_queue_delay{2000};
  int64_t max_queue_size = 256;  // queued requests, all priorities together
  int priority_levels = 2;       // priority 0 is served first
  // Memory of one model call (models/decoding/memory_cost.h): a batch that needs more runs
  // as several calls, and a request with a text that alone needs more is refused at arrival.
  int64_t memory_budget_bytes = int64_t{1} << 30;
};

using Clock = std::chrono::steady_clock;

class QueuedRequest {
 public:
  enum class Rejection { kDeadlineExceeded, kCancelled, kShuttingDown };

  virtual ~QueuedRequest() = default;
  // Only requests with equal keys share a batch (same model version, RPC and options).
  virtual const std::string& batch_key() const = 0;
  virtual int64_t tokens() const = 0;
  virtual int priority() const = 0;
  virtual Clock::time_point deadline() const = 0;  // Clock::time_point::max() for none
  virtual bool cancelled() const = 0;
  // Called once, instead of running, when the request leaves the queue unserved.
  virtual void Reject(Rejection why, const std::string& message) = 0;

  Clock::time_point enqueued_at;
};

// Runs one batch; every request in it must be answered by the runner.
using BatchRunner = std::function<void(std::vector<std::shared_ptr<QueuedRequest>>& batch)>;

// What the batcher reports to the metrics.
struct BatcherObserver {
  std::function<void(int64_t depth)> queue_depth;
  std::function<void(double seconds)> queued_for;  // per request that leaves the queue
  std::function<void(int64_t requests, int64_t tokens)> batch_formed;
};

class Batcher {
 public:
  Batcher(std::string name, BatcherConfig config, BatchRunner runner,
          BatcherObserver observer = {});
  // Stops with no grace: queued requests are rejected as shutting down.
  ~Batcher();

  enum class EnqueueResult { kQueued, kQueueFull, kStopping };
  // Queues the request, or leaves it untouched when the queue is full or the batcher is
  // stopping; *why then says so, naming the limit.
  EnqueueResult Enqueue(std::shared_ptr<QueuedRequest> request, std::string* why);

  // Stops accepting; runs what is queued until `grace` has passed, rejects the rest, and
  // returns once the batch in progress has finished.
  void Stop(std::chrono::milliseconds grace);

  int64_t queue_depth() const;
  const BatcherConfig& config() const { return config_; }

 private:
  // A request that leaves the queue unserved. They are collected under the lock and
  // answered after it is released: answering runs client code (gRPC, metrics).
  struct Rejected {
    std::shared_ptr<QueuedRequest> request;
    QueuedRequest::Rejection why;
    std::string message;
  };

  void Schedule();
  void Execute();
  // Moves cancelled and expired requests to *rejected; returns the earliest deadline left.
  Clock::time_point ExpireLocked(Clock::time_point now, std::vector<Rejected>* rejected);
  // Answers them and reports their time in the queue; called without the lock.
  void Answer(std::vector<Rejected>& rejected, Clock::time_point now);
  std::vector<std::shared_ptr<QueuedRequest>> TakeBatchLocked();
  int64_t DepthLocked() const;
  void Report(int64_t depth);

  const std::string name_;
  const BatcherConfig config_;
  const BatchRunner runner_;
  const BatcherObserver observer_;

  // Guards the queues and every field below up to the threads: accepting_, stopping_,
  // stop_deadline_, executing_, next_batch_, scheduler_done_. Never held while a request is
  // answered, a batch runs or an observer is called.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::deque<std::shared_ptr<QueuedRequest>>> queues_;  // one per priority
  bool accepting_ = true;
  bool stopping_ = false;
  Clock::time_point stop_deadline_ = Clock::time_point::max();
  bool executing_ = false;  // the executor holds a batch
  std::vector<std::shared_ptr<QueuedRequest>> next_batch_;
  std::condition_variable batch_ready_;
  bool scheduler_done_ = false;
  std::thread scheduler_;
  std::thread executor_;
};

}  // namespace normserve
