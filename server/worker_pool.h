// A fixed set of threads that run model work off gRPC's callback threads, which must never
// block.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace normserve {

class WorkerPool {
 public:
  // At most `max_queued` tasks wait for a thread; Submit refuses more.
  explicit WorkerPool(int threads, size_t max_queued = SIZE_MAX);
  // Runs every task already submitted, then joins.
  ~WorkerPool();

  // Queues the task; false (and the task dropped) when max_queued tasks already wait.
  bool Submit(std::function<void()> task);

 private:
  void Run();

  const size_t max_queued_;
  std::mutex mutex_;  // guards tasks_ and stopping_
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace normserve
