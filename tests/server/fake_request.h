// A QueuedRequest for the batcher tests: it records what happened to it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>

#include "server/batcher.h"

namespace normserve::testing {

class FakeRequest : public QueuedRequest {
 public:
  FakeRequest(std::string key, int64_t tokens, int priority = 0,
              Clock::time_point deadline = Clock::time_point::max())
      : key_(std::move(key)), tokens_(tokens), priority_(priority), deadline_(deadline) {}

  // Requests built with equal strings share a key.
  BatchKey batch_key() const override {
    return {nullptr, static_cast<int>(std::hash<std::string>{}(key_)&0x7fffffff)};
  }
  int64_t tokens() const override { return tokens_; }
  int priority() const override { return priority_; }
  Clock::time_point deadline() const override { return deadline_; }
  bool cancelled() const override { return cancelled_; }
  void Reject(Rejection why, const std::string& message) override {
    std::lock_guard<std::mutex> lock(mutex_);
    rejection = why;
    rejection_message = message;
    rejected = true;
    done_.notify_all();
  }

  // What the runner sets.
  void Complete(int64_t value) {
    std::lock_guard<std::mutex> lock(mutex_);
    result = value;
    completed = true;
    completed_at = Clock::now();
    done_.notify_all();
  }
  // Waits until completed or rejected; false on timeout.
  bool Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> lock(mutex_);
    return done_.wait_for(lock, timeout, [this] { return completed || rejected; });
  }

  std::atomic<bool> cancelled_{false};
  int64_t payload = 0;
  // Guarded by mutex_ until Wait() returns.
  bool completed = false, rejected = false;
  int64_t result = 0;
  Clock::time_point completed_at;
  Rejection rejection{};
  std::string rejection_message;

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  std::string key_;
  int64_t tokens_;
  int priority_;
  Clock::time_point deadline_;
};

}  // namespace normserve::testing
