// The dynamic batcher on its own: delay, limits, full queue, deadlines, cancellation,
// priorities, length grouping, the graceful stop, and answers matched to callers.
#include "server/batcher.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "tests/server/fake_request.h"

namespace normserve {
namespace {

using testing::FakeRequest;
using namespace std::chrono_literals;

// Records batches; can hold the runner so that requests pile up in the queue.
class Recorder {
 public:
  // A runner that answers each batch at once (no step loop).
  std::unique_ptr<BatchRunner> Runner() {
    struct Runner : BatchRunner {
      explicit Runner(Recorder* recorder) : recorder(recorder) {}
      void Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) override {
        recorder->Record(batch);
      }
      bool Step() override { return false; }
      RunnerLoad load() const override { return {}; }
      Recorder* recorder;
    };
    return std::make_unique<Runner>(this);
  }
  void Record(std::vector<std::shared_ptr<QueuedRequest>>& batch) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      std::vector<FakeRequest*> requests;
      for (auto& r : batch) requests.push_back(static_cast<FakeRequest*>(r.get()));
      batches_.push_back(requests);
      ++running_;
      changed_.notify_all();
      changed_.wait(lock, [this] { return !held_; });
    }
    for (auto& r : batch) {
      auto* f = static_cast<FakeRequest*>(r.get());
      f->Complete(f->payload * 2);
    }
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mutex_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      held_ = false;
    }
    changed_.notify_all();
  }
  // Waits until `n` batches have started.
  bool WaitForBatches(size_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, 10s, [&] { return batches_.size() >= n; });
  }
  std::vector<std::vector<FakeRequest*>> batches() {
    std::lock_guard<std::mutex> lock(mutex_);
    return batches_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool held_ = false;
  int running_ = 0;
  std::vector<std::vector<FakeRequest*>> batches_;
};

BatcherConfig Config(int64_t size, int64_t tokens, std::chrono::microseconds delay,
                     int64_t queue = 1000) {
  BatcherConfig c;
  c.max_batch_size = size;
  c.max_batch_tokens = tokens;
  c.max_queue_delay = delay;
  c.max_queue_size = queue;
  c.priority_levels = 2;
  return c;
}

// The runners of a batcher of one model instance.
std::vector<std::unique_ptr<BatchRunner>> One(std::unique_ptr<BatchRunner> runner) {
  std::vector<std::unique_ptr<BatchRunner>> runners;
  runners.push_back(std::move(runner));
  return runners;
}

bool Enqueue(Batcher& b, const std::shared_ptr<FakeRequest>& r) {
  std::string why;
  return b.Enqueue(r, &why) == Batcher::EnqueueResult::kQueued;
}

// Puts a request in the held runner, so that what comes next waits in the queue.
std::shared_ptr<FakeRequest> OccupyExecutor(Batcher& batcher, Recorder& recorder,
                                            const std::string& key = "x") {
  recorder.Hold();
  auto running = std::make_shared<FakeRequest>(key, 1);
  EXPECT_TRUE(Enqueue(batcher, running));
  EXPECT_TRUE(recorder.WaitForBatches(1));
  return running;
}

TEST(BatcherTest, WaitsForTheQueueDelayBeforeRunningAPartialBatch) {
  Recorder recorder;
  Batcher batcher("m", Config(8, 1000, 100ms), One(recorder.Runner()));
  auto r = std::make_shared<FakeRequest>("k", 5);
  const auto start = Clock::now();
  ASSERT_TRUE(Enqueue(batcher, r));
  ASSERT_TRUE(r->Wait());
  EXPECT_TRUE(r->completed);
  // A lower bound only: the batch must not run before its delay.
  EXPECT_GE(r->completed_at - start, 100ms);
}

TEST(BatcherTest, AFullBatchRunsWithoutWaitingAndRespectsTheSizeLimit) {
  Recorder recorder;
  Batcher batcher("m", Config(4, 1000, 10s), One(recorder.Runner()));
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (int i = 0; i < 9; ++i) {
    requests.push_back(std::make_shared<FakeRequest>("k", 5));
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  ASSERT_TRUE(recorder.WaitForBatches(1));
  recorder.Release();
  // Two full batches run at once; the ninth request waits for its 10 s delay, so stop the
  // batcher with grace: it flushes what is queued.
  ASSERT_TRUE(requests[7]->Wait());
  batcher.Stop(5s);
  for (auto& r : requests) {
    ASSERT_TRUE(r->Wait());
    EXPECT_TRUE(r->completed);
  }
  const auto batches = recorder.batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].size(), 4u);
  EXPECT_EQ(batches[1].size(), 4u);
  EXPECT_EQ(batches[2].size(), 1u);
}

TEST(BatcherTest, RespectsTheTokenLimitButRunsAnOversizedRequestAlone) {
  Recorder recorder;
  recorder.Hold();
  Batcher batcher("m", Config(16, 100, 20ms), One(recorder.Runner()));
  auto blocker = OccupyExecutor(batcher, recorder, "other");
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (int64_t tokens : {40, 40, 40, 150}) {
    requests.push_back(std::make_shared<FakeRequest>("k", tokens));
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  recorder.Release();
  for (auto& r : requests) ASSERT_TRUE(r->Wait());
  for (const auto& batch : recorder.batches()) {
    int64_t tokens = 0;
    for (auto* r : batch) tokens += r->tokens();
    if (batch.size() > 1) EXPECT_LE(tokens, 100);
  }
  EXPECT_EQ(recorder.batches().size(), 4u);  // blocker, {40,40}, {40}, {150}
}

TEST(BatcherTest, AFullQueueRejectsAtOnceNamingTheLimit) {
  Recorder recorder;
  Batcher batcher("m", Config(1, 1000, 0us, /*queue=*/3), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "k");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Enqueue(batcher, std::make_shared<FakeRequest>("k", 1)));
  std::string why;
  EXPECT_EQ(batcher.Enqueue(std::make_shared<FakeRequest>("k", 1), &why),
            Batcher::EnqueueResult::kQueueFull);
  EXPECT_NE(why.find("max_queue_size 3"), std::string::npos) << why;
  recorder.Release();
}

TEST(BatcherTest, ARequestWhoseDeadlinePassesInTheQueueLeavesIt) {
  Recorder recorder;
  Batcher batcher("m", Config(1, 1000, 0us), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "k");
  auto late = std::make_shared<FakeRequest>("k", 1, 0, Clock::now() + 30ms);
  ASSERT_TRUE(Enqueue(batcher, late));
  // The runner is still held: the request can only leave through its deadline.
  ASSERT_TRUE(late->Wait());
  EXPECT_TRUE(late->rejected);
  EXPECT_EQ(late->rejection, QueuedRequest::Rejection::kDeadlineExceeded);
  EXPECT_NE(late->rejection_message.find("deadline"), std::string::npos);
  recorder.Release();
  ASSERT_TRUE(running->Wait());
  EXPECT_EQ(recorder.batches().size(), 1u);
}

TEST(BatcherTest, ACancelledRequestLeavesTheQueue) {
  Recorder recorder;
  Batcher batcher("m", Config(1, 1000, 0us), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "k");
  auto gone = std::make_shared<FakeRequest>("k", 1);
  ASSERT_TRUE(Enqueue(batcher, gone));
  gone->cancelled_ = true;
  ASSERT_TRUE(gone->Wait());
  EXPECT_EQ(gone->rejection, QueuedRequest::Rejection::kCancelled);
  EXPECT_EQ(batcher.queue_depth(), 0);
  recorder.Release();
}

TEST(BatcherTest, HigherPriorityRunsFirst) {
  Recorder recorder;
  Batcher batcher("m", Config(1, 1000, 0us), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "x");
  auto low1 = std::make_shared<FakeRequest>("a", 1, /*priority=*/1);
  auto low2 = std::make_shared<FakeRequest>("b", 1, 1);
  auto high = std::make_shared<FakeRequest>("c", 1, 0);
  for (auto& r : {low1, low2, high}) ASSERT_TRUE(Enqueue(batcher, r));
  recorder.Release();
  for (auto& r : {low1, low2, high}) ASSERT_TRUE(r->Wait());
  const auto batches = recorder.batches();
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[1][0], high.get());
  EXPECT_EQ(batches[2][0], low1.get());
  EXPECT_EQ(batches[3][0], low2.get());
}

TEST(BatcherTest, GroupsRequestsOfSimilarLength) {
  Recorder recorder;
  Batcher batcher("m", Config(2, 10000, 0us), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "x");
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (int64_t tokens : {10, 100, 12, 95}) {
    requests.push_back(std::make_shared<FakeRequest>("k", tokens));
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  recorder.Release();
  for (auto& r : requests) ASSERT_TRUE(r->Wait());
  const auto batches = recorder.batches();
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[1][0]->tokens() + batches[1][1]->tokens(), 22);   // 10 with 12
  EXPECT_EQ(batches[2][0]->tokens() + batches[2][1]->tokens(), 195);  // 100 with 95
}

TEST(BatcherTest, OnlyRequestsWithTheSameKeyShareABatch) {
  Recorder recorder;
  Batcher batcher("m", Config(8, 10000, 20ms), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "x");
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (const char* key : {"a", "b", "a", "b", "a"}) {
    requests.push_back(std::make_shared<FakeRequest>(key, 3));
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  recorder.Release();
  for (auto& r : requests) ASSERT_TRUE(r->Wait());
  for (const auto& batch : recorder.batches()) {
    for (auto* r : batch) EXPECT_EQ(r->batch_key(), batch.front()->batch_key());
  }
}

TEST(BatcherTest, StopRunsQueuedRequestsWithinGraceAndRejectsTheRest) {
  Recorder recorder;
  Batcher batcher("m", Config(1, 1000, 0us), One(recorder.Runner()));
  auto running = OccupyExecutor(batcher, recorder, "k");
  auto queued = std::make_shared<FakeRequest>("k", 1);
  ASSERT_TRUE(Enqueue(batcher, queued));
  // The running batch holds past the grace period: the queued request cannot run in time.
  std::thread stopper([&] { batcher.Stop(50ms); });
  std::this_thread::sleep_for(200ms);
  recorder.Release();
  stopper.join();
  ASSERT_TRUE(queued->Wait());
  EXPECT_EQ(queued->rejection, QueuedRequest::Rejection::kShuttingDown);
  std::string why;
  EXPECT_EQ(batcher.Enqueue(std::make_shared<FakeRequest>("k", 1), &why),
            Batcher::EnqueueResult::kStopping);
  EXPECT_NE(why.find("shutting down"), std::string::npos);
}

TEST(BatcherTest, EveryAnswerReachesItsOwnCallerUnderConcurrency) {
  Recorder recorder;
  Batcher batcher("m", Config(8, 1000, 200us, 100000), One(recorder.Runner()));
  constexpr int kThreads = 8, kPerThread = 200;
  std::atomic<int> wrong{0}, lost{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      for (int i = 0; i < kPerThread; ++i) {
        auto r = std::make_shared<FakeRequest>(random() % 2 ? "a" : "b", 1 + random() % 50);
        r->payload = t * 100000 + i;
        std::string why;
        if (batcher.Enqueue(r, &why) != Batcher::EnqueueResult::kQueued || !r->Wait() ||
            !r->completed) {
          ++lost;
        } else if (r->result != r->payload * 2) {
          ++wrong;
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(wrong, 0);
  size_t answered = 0;
  for (const auto& b : recorder.batches()) {
    EXPECT_LE(b.size(), 8u);
    answered += b.size();
  }
  EXPECT_EQ(answered, static_cast<size_t>(kThreads * kPerThread));
}

// A runner with a step loop: a request needs `payload` steps, joins between steps and leaves
// when its last step is done.
class SteppingRunner : public BatchRunner {
 public:
  void Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) override {
    for (auto& r : batch) live_.push_back(std::static_pointer_cast<FakeRequest>(r));
    most_live_ = std::max<int64_t>(most_live_, static_cast<int64_t>(live_.size()));
  }
  bool Step() override {
    std::this_thread::sleep_for(1ms);
    for (auto it = live_.begin(); it != live_.end();) {
      if (--(*it)->payload <= 0) {
        (*it)->Complete(0);
        it = live_.erase(it);
      } else {
        ++it;
      }
    }
    return !live_.empty();
  }
  RunnerLoad load() const override {
    RunnerLoad load{static_cast<int64_t>(live_.size()), 0};
    for (const auto& r : live_) load.tokens += r->tokens();
    return load;
  }
  std::atomic<int64_t> most_live_{0};

 private:
  std::vector<std::shared_ptr<FakeRequest>> live_;  // the executor's thread only
};

TEST(BatcherTest, StepLoopTakesRequestsBetweenStepsWithinTheBudget) {
  auto runner = std::make_unique<SteppingRunner>();
  SteppingRunner* stepping = runner.get();
  Batcher batcher("m", Config(3, 1000, 0us), One(std::move(runner)));
  auto long_request = std::make_shared<FakeRequest>("k", 5);
  long_request->payload = 400;  // about 0.4 s of steps
  ASSERT_TRUE(Enqueue(batcher, long_request));
  for (int i = 0; i < 5000 && stepping->most_live_.load() == 0; ++i)
    std::this_thread::sleep_for(1ms);
  ASSERT_EQ(stepping->most_live_.load(), 1);  // the long request runs alone
  std::vector<std::shared_ptr<FakeRequest>> short_requests;
  for (int i = 0; i < 6; ++i) {
    short_requests.push_back(std::make_shared<FakeRequest>("k", 5));
    short_requests.back()->payload = 3;
    ASSERT_TRUE(Enqueue(batcher, short_requests.back()));
  }
  ASSERT_TRUE(long_request->Wait());
  for (auto& r : short_requests) {
    ASSERT_TRUE(r->Wait());
    // Joined the running loop and left it before the long request was done.
    EXPECT_TRUE(r->completed);
    EXPECT_LT(r->completed_at, long_request->completed_at);
  }
  EXPECT_LE(stepping->most_live_.load(), 3);
}

TEST(BatcherTest, StepLoopRespectsTheTokenBudgetOfRunningRequests) {
  auto runner = std::make_unique<SteppingRunner>();
  SteppingRunner* stepping = runner.get();
  Batcher batcher("m", Config(16, 100, 0us), One(std::move(runner)));
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(std::make_shared<FakeRequest>("k", 40));
    requests.back()->payload = 20;
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  for (auto& r : requests) ASSERT_TRUE(r->Wait());
  // 40 + 40 fit 100 tokens, a third does not.
  EXPECT_LE(stepping->most_live_.load(), 2);
}

// A runner that remembers the threads that called it.
class ThreadRecordingRunner : public BatchRunner {
 public:
  explicit ThreadRecordingRunner(Recorder* recorder) : recorder_(recorder) {}
  void OnExecutorStart() override { started_on_ = std::this_thread::get_id(); }
  void Run(std::vector<std::shared_ptr<QueuedRequest>>& batch) override {
    ran_on_ = std::this_thread::get_id();
    recorder_->Record(batch);
  }
  bool Step() override { return false; }
  RunnerLoad load() const override { return {}; }
  std::thread::id started_on_, ran_on_;

 private:
  Recorder* recorder_;
};

TEST(BatcherTest, InstancesRunBatchesAtTheSameTimeEachOnItsOwnThread) {
  Recorder recorder;
  std::vector<std::unique_ptr<BatchRunner>> runners;
  std::vector<ThreadRecordingRunner*> instances;
  for (int i = 0; i < 2; ++i) {
    runners.push_back(std::make_unique<ThreadRecordingRunner>(&recorder));
    instances.push_back(static_cast<ThreadRecordingRunner*>(runners.back().get()));
  }
  Batcher batcher("m", Config(1, 1000, 0us), std::move(runners));
  // The first instance holds its batch; the second request must start on the other one.
  auto first = OccupyExecutor(batcher, recorder);
  auto second = std::make_shared<FakeRequest>("x", 1);
  ASSERT_TRUE(Enqueue(batcher, second));
  ASSERT_TRUE(recorder.WaitForBatches(2));
  // A third waits: both instances are busy.
  auto third = std::make_shared<FakeRequest>("x", 1);
  ASSERT_TRUE(Enqueue(batcher, third));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(recorder.batches().size(), 2u);
  EXPECT_EQ(batcher.queue_depth(), 1);
  recorder.Release();
  for (auto* r : {first.get(), second.get(), third.get()}) {
    ASSERT_TRUE(r->Wait());
    EXPECT_TRUE(r->completed);
  }
  EXPECT_NE(instances[0]->ran_on_, instances[1]->ran_on_);
  for (auto* instance : instances) EXPECT_EQ(instance->started_on_, instance->ran_on_);
}

TEST(BatcherTest, TheStepBudgetIsPerInstance) {
  std::vector<std::unique_ptr<BatchRunner>> runners;
  std::vector<SteppingRunner*> instances;
  for (int i = 0; i < 2; ++i) {
    runners.push_back(std::make_unique<SteppingRunner>());
    instances.push_back(static_cast<SteppingRunner*>(runners.back().get()));
  }
  Batcher batcher("m", Config(2, 1000, 0us), std::move(runners));
  std::vector<std::shared_ptr<FakeRequest>> requests;
  for (int i = 0; i < 12; ++i) {
    requests.push_back(std::make_shared<FakeRequest>("k", 5));
    requests.back()->payload = 30;
    ASSERT_TRUE(Enqueue(batcher, requests.back()));
  }
  for (auto& r : requests) ASSERT_TRUE(r->Wait());
  for (auto* instance : instances) {
    EXPECT_GE(instance->most_live_.load(), 1);  // both instances took work
    EXPECT_LE(instance->most_live_.load(), 2);  // and each at most max_batch_size
  }
}

}  // namespace
}  // namespace normserve
