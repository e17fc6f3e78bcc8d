// The dynamic batcher of one served model: a bounded, prioritized queue, a scheduler thread
// that forms batches of compatible requests of similar length, and one executor thread per
// model instance that hands them to its own BatchRunner and, between batches, runs the
// runner's steps: work that joined a step loop (the decoding engine) advances one step at a
// time, and new batches join it between steps. The scheduler keeps expiring queued requests
// meanwhile.
//
// A batch goes to the instance with the least running work that can take one, when it is
// full (max_batch_size requests or max_batch_tokens tokens, counting what that instance is
// still working on) or when its oldest request has waited max_queue_delay. Requests whose deadline
// passes or whose client cancels while they wait leave the queue with that outcome. No gRPC here:
// requests report their fate through virtual calls, so the batcher is tested on its own.
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
  // Model instances: executors that each run their own batches and steps on a thread of their
  // own (Triton's instance groups, CTranslate2's inter_threads). Every limit below is per
  // instance.
  int instances = 1;
  // Intra-op threads of each instance's own kernels (ATen's parallel_for: norms, attention).
  // The GEMMs run on Debian's BLIS, whose thread count is one for the process (--threads).
  int threads = 1;
  int64_t max_batch_size = 64;      // requests per batch, or running in the step loop
  int64_t max_batch_tokens = 4096;  // tokens per batch (a single larger request still runs)
  std::chrono::microseconds max_queue_delay{2000};
  int64_t max_queue_size = 256;  // queued requests, all priorities together
  int priority_levels = 2;       // priority 0 is served first
  // Memory of the model work (models/decoding/memory_cost.h): a Score batch that needs more
  // runs as several calls, decoding sequences join while their estimate fits, and a request
  // with a text that alone needs more is refused at arrival.
  int64_t memory_budget_bytes = int64_t{1} << 30;
};

// Requests share a batch only when their keys are equal: one loaded model version (its
// identity, so that a version reloaded from changed files is another) and one kind of call.
// Options are per request: the decoding engine runs each with its own.
struct BatchKey {
  const void* model = nullptr;
  int kind = 0;
  bool operator==(const BatchKey& other) const {
    return model == other.model && kind == other.kind;
  }
  bool operator!=(const BatchKey& other) const { return !(*this == other); }
};

using Clock = std::chrono::steady_clock;

class QueuedRequest {
 public:
  enum class Rejection { kDeadlineExceeded, kCancelled, kShuttingDown };

  virtual ~QueuedRequest() = default;
  virtual BatchKey batch_key() const = 0;
  virtual int64_t tokens() const = 0;
  virtual int priority() const = 0;
  virtual Clock::time_point deadline() const = 0;  // Clock::time_point::max() for none
  virtual bool cancelled() const = 0;
  // Called once, instead of running, when the request leaves the queue unserved.
  virtual void Reject(Rejection why, const std::string& message) = 0;

  Clock::time_point enqueued_at;
};

// The work a runner has taken and not answered yet.
struct RunnerLoad {
  int64_t requests = 0;
  int64_t tokens = 0;
};

// What the executor thread drives. Every request handed to Run must be answered by the
// runner, at once or in later steps.
class BatchRunner {
 public:
  virtual ~BatchRunner() = default;
  // Runs a batch, or admits it to the step loop.
  virtual void Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) = 0;
  // One step of the admitted work; false when there is none.
  virtual bool Step() = 0;
  virtual RunnerLoad load() const = 0;
  // Called first on the executor thread that will make every other call.
  virtual void OnExecutorStart() {}
};

// What the batcher reports to the metrics.
struct BatcherObserver {
  std::function<void(int64_t depth)> queue_depth;
  std::function<void(double seconds)> queued_for;  // per request that leaves the queue
  std::function<void(int64_t requests, int64_t tokens)> batch_formed;
};

class Batcher {
 public:
  // One model instance per runner.
  Batcher(std::string name, BatcherConfig config, std::vector<std::unique_ptr<BatchRunner>> runners,
          BatcherObserver observer = {});
  // Stops with no grace: queued requests are rejected as shutting down.
  ~Batcher();

  enum class EnqueueResult { kQueued, kQueueFull, kStopping };
  // Queues the request, or leaves it untouched when the queue is full or the batcher is
  // stopping; *why then says so, naming the limit.
  EnqueueResult Enqueue(std::shared_ptr<QueuedRequest> request, std::string* why);

  // Stops accepting; runs what is queued until `grace` has passed, rejects the rest, and
  // returns once the runner has finished what it took (its requests stop themselves when
  // the grace has passed).
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

  // One executor and what the scheduler knows of it.
  struct Instance {
    std::unique_ptr<BatchRunner> runner;
    std::vector<std::shared_ptr<QueuedRequest>> next_batch;  // formed, not yet taken
    bool running_batch = false;                              // the executor is in BatchRunner::Run
    RunnerLoad running;  // the runner's load after its last step
    std::thread executor;
  };

  void Schedule();
  void Execute(Instance& instance);
  // Moves cancelled and expired requests to *rejected; returns the earliest deadline left.
  Clock::time_point ExpireLocked(Clock::time_point now, std::vector<Rejected>* rejected);
  // Answers them and reports their time in the queue; called without the lock.
  void Answer(std::vector<Rejected>& rejected, Clock::time_point now);
  // The instance that takes the next batch: free of a batch in hand, with room, least loaded;
  // null when none.
  Instance* ReceiverLocked();
  // The next batch within what the instance leaves of the batch budget; empty when nothing
  // fits.
  std::vector<std::shared_ptr<QueuedRequest>> TakeBatchLocked(const Instance& receiver);
  // Requests and tokens a new batch for the instance may still bring.
  RunnerLoad RoomLocked(const Instance& instance) const;
  int64_t DepthLocked() const;
  void Report(int64_t depth);

  const std::string name_;
  const BatcherConfig config_;
  const BatcherObserver observer_;

  // Guards the queues, accepting_, stopping_, stop_deadline_, scheduler_done_ and each
  // instance's next_batch, running_batch and running (its runner is its executor's alone).
  // Never held while a request is answered, a batch or step runs or an observer is called.
  mutable std::mutex mutex_;
  std::condition_variable wake_;                                    // the scheduler waits on it
  std::condition_variable batch_ready_;                             // the executors wait on it
  std::vector<std::deque<std::shared_ptr<QueuedRequest>>> queues_;  // one per priority
  bool accepting_ = true;
  bool stopping_ = false;
  Clock::time_point stop_deadline_ = Clock::time_point::max();
  bool scheduler_done_ = false;
  std::vector<Instance> instances_;
  std::thread scheduler_;
};

}  // namespace normserve
