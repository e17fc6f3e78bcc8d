#include "server/batcher.h"

#include <algorithm>
#include <cstdlib>

namespace normserve {
namespace {

// While requests wait, the scheduler wakes at least this often to notice cancelled calls.
constexpr auto kCancelPoll = std::chrono::milliseconds(10);

}  // namespace

Batcher::Batcher(std::string name, BatcherConfig config,
                 std::vector<std::unique_ptr<BatchRunner>> runners, BatcherObserver observer)
    : name_(std::move(name)),
      config_(config),
      observer_(std::move(observer)),
      queues_(static_cast<size_t>(std::max(1, config.priority_levels))),
      instances_(runners.size()) {
  // Every instance exists before any thread reads instances_.
  for (size_t i = 0; i < runners.size(); ++i) instances_[i].runner = std::move(runners[i]);
  scheduler_ = std::thread([this] { Schedule(); });
  for (Instance& instance : instances_) {
    instance.executor = std::thread([this, &instance] { Execute(instance); });
  }
}

Batcher::~Batcher() { Stop(std::chrono::milliseconds(0)); }

Batcher::EnqueueResult Batcher::Enqueue(std::shared_ptr<QueuedRequest> request, std::string* why) {
  int64_t depth = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) {
      *why = "model '" + name_ + "' is shutting down";
      return EnqueueResult::kStopping;
    }
    if (DepthLocked() >= config_.max_queue_size) {
      *why = "the queue of model '" + name_ + "' is full (max_queue_size " +
             std::to_string(config_.max_queue_size) + "); retry later or raise max_queue_size";
      return EnqueueResult::kQueueFull;
    }
    const int priority = std::clamp(request->priority(), 0, static_cast<int>(queues_.size()) - 1);
    request->enqueued_at = Clock::now();
    queues_[static_cast<size_t>(priority)].push_back(std::move(request));
    depth = DepthLocked();
  }
  wake_.notify_one();
  Report(depth);
  return EnqueueResult::kQueued;
}

void Batcher::Stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    accepting_ = false;
    if (!stopping_ || Clock::now() + grace < stop_deadline_) stop_deadline_ = Clock::now() + grace;
    stopping_ = true;
  }
  wake_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  for (Instance& instance : instances_) {
    if (instance.executor.joinable()) instance.executor.join();
  }
}

int64_t Batcher::queue_depth() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return DepthLocked();
}

int64_t Batcher::DepthLocked() const {
  int64_t depth = 0;
  for (const auto& q : queues_) depth += static_cast<int64_t>(q.size());
  return depth;
}

void Batcher::Report(int64_t depth) {
  if (observer_.queue_depth) observer_.queue_depth(depth);
}

Clock::time_point Batcher::ExpireLocked(Clock::time_point now, std::vector<Rejected>* rejected) {
  Clock::time_point earliest = Clock::time_point::max();
  for (auto& queue : queues_) {
    for (auto it = queue.begin(); it != queue.end();) {
      const auto& r = *it;
      const bool expired = r->deadline() <= now;
      if (expired) {
        rejected->push_back(
            {r, QueuedRequest::Rejection::kDeadlineExceeded,
             "the deadline passed after " +
                 std::to_string(
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - r->enqueued_at)
                         .count()) +
                 " ms in the queue of model '" + name_ + "'"});
        it = queue.erase(it);
      } else if (r->cancelled()) {
        rejected->push_back(
            {r, QueuedRequest::Rejection::kCancelled, "the client cancelled the call"});
        it = queue.erase(it);
      } else {
        earliest = std::min(earliest, r->deadline());
        ++it;
      }
    }
  }
  return earliest;
}

void Batcher::Answer(std::vector<Rejected>& rejected, Clock::time_point now) {
  for (Rejected& r : rejected) {
    r.request->Reject(r.why, r.message);
    if (observer_.queued_for) {
      observer_.queued_for(std::chrono::duration<double>(now - r.request->enqueued_at).count());
    }
  }
  rejected.clear();
}

RunnerLoad Batcher::RoomLocked(const Instance& instance) const {
  return {config_.max_batch_size - instance.running.requests,
          config_.max_batch_tokens - instance.running.tokens};
}

Batcher::Instance* Batcher::ReceiverLocked() {
  Instance* best = nullptr;
  for (Instance& instance : instances_) {
    if (instance.running_batch || !instance.next_batch.empty()) continue;
    const RunnerLoad room = RoomLocked(instance);
    if (instance.running.requests > 0 && (room.requests <= 0 || room.tokens <= 0)) continue;
    if (best == nullptr || instance.running.tokens < best->running.tokens) best = &instance;
  }
  return best;
}

std::vector<std::shared_ptr<QueuedRequest>> Batcher::TakeBatchLocked(const Instance& receiver) {
  auto head_queue =
      std::find_if(queues_.begin(), queues_.end(), [](auto& q) { return !q.empty(); });
  std::shared_ptr<QueuedRequest> head = head_queue->front();
  // A request larger than the budget runs, but only when the instance has nothing else.
  const RunnerLoad room = RoomLocked(receiver);
  const bool alone = receiver.running.requests == 0;
  if (!alone && (room.requests < 1 || head->tokens() > room.tokens)) return {};
  head_queue->pop_front();

  // Compatible requests, best first: higher priority, then closest in length to the head (less
  // padding), then oldest.
  struct Candidate {
    size_t queue;
    std::shared_ptr<QueuedRequest> request;
  };
  std::vector<Candidate> candidates;
  for (size_t q = 0; q < queues_.size(); ++q) {
    for (const auto& r : queues_[q]) {
      if (r->batch_key() == head->batch_key()) candidates.push_back({q, r});
    }
  }
  const int64_t head_tokens = head->tokens();
  std::stable_sort(candidates.begin(), candidates.end(),
                   [&](const Candidate& a, const Candidate& b) {
                     if (a.queue != b.queue) return a.queue < b.queue;
                     return std::llabs(a.request->tokens() - head_tokens) <
                            std::llabs(b.request->tokens() - head_tokens);
                   });
  std::vector<std::shared_ptr<QueuedRequest>> batch = {head};
  int64_t tokens = head_tokens;
  for (const Candidate& c : candidates) {
    if (static_cast<int64_t>(batch.size()) >= (alone ? config_.max_batch_size : room.requests))
      break;
    if (tokens + c.request->tokens() > (alone ? config_.max_batch_tokens : room.tokens)) continue;
    tokens += c.request->tokens();
    batch.push_back(c.request);
    auto& queue = queues_[c.queue];
    queue.erase(std::find(queue.begin(), queue.end(), c.request));
  }
  return batch;
}

void Batcher::Schedule() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<Rejected> rejected;
  for (;;) {
    const auto now = Clock::now();
    if (stopping_ && now >= stop_deadline_) {
      for (auto& queue : queues_) {
        for (auto& r : queue) {
          rejected.push_back(
              {r, QueuedRequest::Rejection::kShuttingDown,
               "the server shut down before model '" + name_ + "' reached this request"});
        }
        queue.clear();
      }
      break;
    }
    const Clock::time_point earliest_deadline = ExpireLocked(now, &rejected);
    if (!rejected.empty()) {
      const int64_t depth = DepthLocked();
      lock.unlock();
      Answer(rejected, now);
      Report(depth);
      lock.lock();
      continue;  // the queue may have changed meanwhile
    }
    if (DepthLocked() == 0) {
      if (stopping_) break;
      wake_.wait(lock);
      continue;
    }
    const auto poll = std::min(earliest_deadline, now + kCancelPoll);
    Instance* receiver = ReceiverLocked();
    if (receiver == nullptr) {
      // Every executor runs a batch or has one to take, or its runner is full: the queue grows
      // meanwhile (its requests can still expire), and a larger batch forms when there is
      // room. A batch formed during a step waits at most that step.
      wake_.wait_until(lock, stopping_ ? std::min(poll, stop_deadline_) : poll);
      continue;
    }
    const RunnerLoad room = RoomLocked(*receiver);
    // The head of the highest non-empty priority decides when the batch is due.
    const auto& head =
        std::find_if(queues_.begin(), queues_.end(), [](auto& q) { return !q.empty(); })->front();
    int64_t compatible = 0, tokens = 0;
    for (const auto& queue : queues_) {
      for (const auto& r : queue) {
        if (r->batch_key() != head->batch_key()) continue;
        ++compatible;
        tokens += r->tokens();
      }
    }
    const bool full = compatible >= std::max<int64_t>(1, room.requests) ||
                      tokens >= std::max<int64_t>(1, room.tokens);
    const auto due = head->enqueued_at + config_.max_queue_delay;
    if (!full && !stopping_ && now < due) {
      wake_.wait_until(lock, std::min(due, poll));
      continue;
    }
    receiver->next_batch = TakeBatchLocked(*receiver);
    if (receiver->next_batch.empty()) {
      wake_.wait_until(lock, stopping_ ? std::min(poll, stop_deadline_) : poll);
      continue;
    }
    const int64_t depth = DepthLocked();
    // Copies for the observers, which run without the lock.
    std::vector<double> waited;
    int64_t batch_tokens = 0;
    for (const auto& r : receiver->next_batch) {
      batch_tokens += r->tokens();
      waited.push_back(std::chrono::duration<double>(now - r->enqueued_at).count());
    }
    batch_ready_.notify_all();
    lock.unlock();
    if (observer_.queued_for) {
      for (double seconds : waited) observer_.queued_for(seconds);
    }
    if (observer_.batch_formed) {
      observer_.batch_formed(static_cast<int64_t>(waited.size()), batch_tokens);
    }
    Report(depth);
    lock.lock();
  }
  scheduler_done_ = true;
  batch_ready_.notify_all();
  lock.unlock();
  Answer(rejected, Clock::now());
  Report(0);
}

void Batcher::Execute(Instance& instance) {
  instance.runner->OnExecutorStart();
  bool busy = false;  // the runner has work in its step loop
  for (;;) {
    std::vector<std::shared_ptr<QueuedRequest>> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      batch_ready_.wait(lock,
                        [&] { return busy || !instance.next_batch.empty() || scheduler_done_; });
      // The scheduler is done and so is this runner.
      if (!busy && instance.next_batch.empty()) return;
      batch = std::move(instance.next_batch);
      instance.next_batch.clear();
      instance.running_batch = !batch.empty();
    }
    if (!batch.empty()) {
      instance.runner->Run(batch);
      batch.clear();
      const RunnerLoad load = instance.runner->load();
      std::lock_guard<std::mutex> lock(mutex_);
      instance.running_batch = false;
      instance.running = load;  // before the scheduler forms the next batch against it
    }
    busy = instance.runner->Step();
    const RunnerLoad load = instance.runner->load();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      instance.running = load;
    }
    wake_.notify_all();
  }
}

}  // namespace normserve
