#include "client/bench/load_runner.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include "client/auth_token.h"

namespace normserve::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Output tokens: the pieces of each text's best hypothesis.
int64_t CountTokens(const v1::TranslateResponse& r) {
  int64_t n = 0;
  for (const auto& t : r.translations()) {
    if (t.hypotheses_size() > 0) n += t.hypotheses(0).tokens_size();
  }
  return n;
}

// Scored tokens, the closing </s> of each text included.
int64_t CountTokens(const v1::ScoreResponse& r) {
  int64_t n = 0;
  for (const auto& s : r.results()) n += s.tokens_size();
  return n;
}

}  // namespace

// One open-loop request. Shared between the in-flight set and gRPC's completion callback, so
// that cancelling (which may run callbacks inline) never races a delete.
struct LoadRunner::AsyncCall {
  grpc::ClientContext context;
  v1::TranslateResponse translate;
  v1::ScoreResponse score;
  size_t stub = 0;
  size_t request = 0;
  Clock::time_point scheduled;
  bool measured = false;
  OpenLoop* loop = nullptr;
};

struct LoadRunner::OpenLoop {
  std::mutex mutex;
  std::condition_variable done;
  std::unordered_set<std::shared_ptr<AsyncCall>> in_flight;
  StepStats stats;
  Clock::time_point last_end;

  void Finish(const std::shared_ptr<AsyncCall>& call, const grpc::Status& status, int64_t tokens) {
    const auto end = Clock::now();
    std::lock_guard<std::mutex> lock(mutex);
    if (call->measured) {
      stats.Record(status.error_code(), Millis(end - call->scheduled), tokens);
      last_end = std::max(last_end, end);
    }
    in_flight.erase(call);
    done.notify_all();
  }
};

LoadRunner::LoadRunner(LoadConfig config) : config_(std::move(config)) {
  for (const auto& channel : config_.channels) stubs_.push_back(v1::NormServe::NewStub(channel));
  const auto& texts = config_.texts;
  texts_count_ = texts.size();
  // Request i carries texts i, i+1, ..., i+batch-1 (cyclically).
  for (size_t i = 0; i < texts.size(); ++i) {
    if (config_.rpc == Rpc::kTranslate) {
      v1::TranslateRequest r;
      r.set_model(config_.model);
      for (int j = 0; j < config_.batch; ++j) r.add_texts(texts[(i + j) % texts.size()].source);
      if (config_.beam) r.mutable_options()->set_beam_size(*config_.beam);
      r.mutable_options()->set_return_tokens(true);
      translate_requests_.push_back(std::move(r));
    } else {
      v1::ScoreRequest r;
      r.set_model(config_.model);
      for (int j = 0; j < config_.batch; ++j) {
        const TextPair& t = texts[(i + j) % texts.size()];
        if (config_.pairs) {
          auto* pair = r.add_pairs();
          pair->set_source(t.source);
          pair->set_target(t.target);
        } else {
          r.add_texts(t.target);
        }
      }
      score_requests_.push_back(std::move(r));
    }
  }
}

LoadRunner::~LoadRunner() = default;

grpc::Status LoadRunner::CallSync(v1::NormServe::Stub& stub, size_t request, int64_t* tokens) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(config_.timeout_ms));
  client::AttachToken(&context, config_.token);
  *tokens = 0;
  if (config_.rpc == Rpc::kTranslate) {
    v1::TranslateResponse response;
    grpc::Status status = stub.Translate(&context, translate_requests_[request], &response);
    if (status.ok()) *tokens = CountTokens(response);
    return status;
  }
  v1::ScoreResponse response;
  grpc::Status status = stub.Score(&context, score_requests_[request], &response);
  if (status.ok()) *tokens = CountTokens(response);
  return status;
}

grpc::Status LoadRunner::Probe() {
  int64_t tokens = 0;
  return CallSync(StubFor(0), 0, &tokens);
}

StepStats LoadRunner::RunConcurrency(int concurrency) {
  StepStats stats;
  stats.concurrency = concurrency;
  std::mutex mutex;
  const bool by_count = config_.requests.has_value();
  const auto t0 = Clock::now();
  const auto window_start = t0 + FromSeconds(config_.warmup_s);
  const auto window_end =
      by_count ? Clock::time_point::max() : window_start + FromSeconds(*config_.duration_s);
  std::atomic<int64_t> tickets{0};
  auto first_start = Clock::time_point::max();
  auto last_end = window_start;

  auto worker = [&](size_t id) {
    v1::NormServe::Stub& stub = StubFor(id);
    while (!Stopped()) {
      const auto start = Clock::now();
      const bool counted = by_count && start >= window_start;
      // Bounded: by the request count, or by the window's end.
      if (counted && tickets.fetch_add(1) >= *config_.requests) break;
      if (!by_count && start >= window_end) break;
      int64_t tokens = 0;
      const grpc::Status status = CallSync(stub, NextRequest(), &tokens);
      const auto end = Clock::now();
      // By duration, every response that completes inside the window counts, whenever it was
      // sent; by count, the ones sent after the warmup.
      const bool measured = by_count ? counted : end >= window_start && end <= window_end;
      if (!measured) continue;
      std::lock_guard<std::mutex> lock(mutex);
      stats.Record(status.error_code(), Millis(end - start), tokens);
      first_start = std::min(first_start, start);
      last_end = std::max(last_end, end);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(concurrency);
  for (int i = 0; i < concurrency; ++i) threads.emplace_back(worker, static_cast<size_t>(i));
  for (auto& t : threads) t.join();

  if (by_count) {
    stats.elapsed_s = first_start < last_end ? Seconds(last_end - first_start) : 0;
  } else {
    const auto end = std::min(Clock::now(), window_end);  // earlier when stopped
    stats.elapsed_s = end > window_start ? Seconds(end - window_start) : 0;
  }
  return stats;
}

void LoadRunner::StartAsync(const std::shared_ptr<AsyncCall>& call) {
  call->context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(config_.timeout_ms));
  client::AttachToken(&call->context, config_.token);
  v1::NormServe::Stub& stub = StubFor(call->stub);
  if (config_.rpc == Rpc::kTranslate) {
    stub.async()->Translate(&call->context, &translate_requests_[call->request], &call->translate,
                            [call](grpc::Status status) {
                              const int64_t tokens = status.ok() ? CountTokens(call->translate) : 0;
                              call->loop->Finish(call, status, tokens);
                            });
  } else {
    stub.async()->Score(&call->context, &score_requests_[call->request], &call->score,
                        [call](grpc::Status status) {
                          const int64_t tokens = status.ok() ? CountTokens(call->score) : 0;
                          call->loop->Finish(call, status, tokens);
                        });
  }
}

StepStats LoadRunner::RunRate(double rate) {
  OpenLoop loop;
  loop.stats.rate = rate;
  const bool by_count = config_.requests.has_value();
  const auto t0 = Clock::now();
  const auto window_start = t0 + FromSeconds(config_.warmup_s);
  const auto window_end =
      by_count ? Clock::time_point::max() : window_start + FromSeconds(*config_.duration_s);
  loop.last_end = window_start;
  std::mt19937_64 rng(config_.seed);
  std::exponential_distribution<double> gap(rate);
  double offset_s = 0;
  int64_t arrivals = 0;  // measured ones
  size_t sent = 0;

  // Bounded: by the window's end, or by the request count.
  while (!Stopped()) {
    offset_s += gap(rng);
    const auto scheduled = t0 + FromSeconds(offset_s);
    if (scheduled >= window_end) break;
    const bool measured = scheduled >= window_start;
    if (by_count && measured && arrivals >= *config_.requests) break;
    // Sleep in short slices so that SIGINT ends a slow schedule promptly.
    for (auto now = Clock::now(); now < scheduled && !Stopped(); now = Clock::now()) {
      std::this_thread::sleep_for(
          std::min<Clock::duration>(scheduled - now, std::chrono::milliseconds(100)));
    }
    if (Stopped()) break;
    if (measured) ++arrivals;

    auto call = std::make_shared<AsyncCall>();
    call->stub = sent;
    call->request = NextRequest();
    call->scheduled = scheduled;
    call->measured = measured;
    call->loop = &loop;
    {
      std::lock_guard<std::mutex> lock(loop.mutex);
      if (static_cast<int>(loop.in_flight.size()) >= config_.max_outstanding) {
        if (measured) ++loop.stats.dropped;
        continue;
      }
      loop.in_flight.insert(call);
      if (measured) {
        loop.stats.max_send_lag_ms =
            std::max(loop.stats.max_send_lag_ms, Millis(Clock::now() - scheduled));
      }
    }
    ++sent;
    StartAsync(call);
  }
  const auto schedule_end = std::min(Clock::now(), window_end);

  // Every call carries a deadline, so this ends; the bound is a guard, after which (or on
  // SIGINT) what is left is cancelled.
  std::unique_lock<std::mutex> lock(loop.mutex);
  const auto bound =
      Clock::now() + std::chrono::milliseconds(config_.timeout_ms) + std::chrono::seconds(5);
  auto drained = [&] { return loop.in_flight.empty(); };
  while (!drained() && !Stopped() && Clock::now() < bound) {
    loop.done.wait_for(lock, std::chrono::milliseconds(100));
  }
  if (!drained()) {
    std::vector<std::shared_ptr<AsyncCall>> left(loop.in_flight.begin(), loop.in_flight.end());
    lock.unlock();  // cancelling may run the callbacks, which take the lock, on this thread
    for (const auto& call : left) call->context.TryCancel();
    left.clear();
    lock.lock();
    loop.done.wait(lock, drained);
  }
  const auto end = by_count ? loop.last_end : std::max(schedule_end, loop.last_end);
  loop.stats.elapsed_s = end > window_start ? Seconds(end - window_start) : 0;
  return loop.stats;
}

}  // namespace normserve::bench
