#include "models/norm/norm_timing.h"

#include <array>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace normserve {
namespace internal {

struct NormTimingSlot {
  int64_t launches = 0;
  double cpu_seconds = 0;
  std::vector<std::pair<void*, void*>> events;  // CUDA start/stop pairs, read at forward end
};

}  // namespace internal

namespace {

using internal::NormTimingSlot;

constexpr int kKinds = 6;    // NormKind
constexpr int kDevices = 2;  // NormDevice
constexpr int kDtypes = 3;   // NormDtype
constexpr NormKind kAllKinds[kKinds] = {NormKind::kLayerNorm,      NormKind::kRMSNorm,
                                        NormKind::kPartialRMSNorm, NormKind::kPowerNorm,
                                        NormKind::kBatchNorm,      NormKind::kCRMSNorm};
constexpr NormDtype kAllDtypes[kDtypes] = {NormDtype::kFloat32, NormDtype::kFloat16,
                                           NormDtype::kBFloat16};

std::atomic<int64_t> sample_every{16};
std::atomic<uint64_t> forwards{0};
std::atomic<bool> have_sink{false};
std::mutex sink_mutex;
std::shared_ptr<const NormTimingSink> sink;  // guarded by sink_mutex

std::shared_ptr<const NormTimingSink> CurrentSink() {
  std::lock_guard<std::mutex> lock(sink_mutex);
  return sink;
}

// One thread's forward in progress.
struct ThreadTiming {
  int depth = 0;        // nested NormForwardTiming guards
  bool active = false;  // the outermost guard samples this forward
  std::array<NormTimingSlot, kKinds * kDevices * kDtypes> slots;
  std::vector<void*> free_events;  // CUDA events for reuse

  NormTimingSlot& Slot(NormKind kind, NormDevice device, NormDtype dtype) {
    return slots[(static_cast<int>(kind) * kDevices + static_cast<int>(device)) * kDtypes +
                 static_cast<int>(dtype)];
  }
  void* TakeEvent() {
    if (free_events.empty()) return cuda::CreateTimingEvent();
    void* e = free_events.back();
    free_events.pop_back();
    return e;
  }
  ~ThreadTiming() {
    for (NormTimingSlot& s : slots) {
      for (auto& [a, b] : s.events) free_events.insert(free_events.end(), {a, b});
    }
    for (void* e : free_events) cuda::DestroyTimingEvent(e);
  }
};

thread_local ThreadTiming timing;

int64_t NowNanoseconds() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void SetNormTimingSink(NormTimingSink new_sink) {
  std::shared_ptr<const NormTimingSink> p;
  if (new_sink) p = std::make_shared<const NormTimingSink>(std::move(new_sink));
  std::lock_guard<std::mutex> lock(sink_mutex);
  sink = std::move(p);
  have_sink.store(sink != nullptr);
}

void SetNormTimingSampleEvery(int64_t every) { sample_every.store(every); }
int64_t NormTimingSampleEvery() { return sample_every.load(); }

NormForwardTiming::NormForwardTiming() {
  if (timing.depth++ > 0) return;  // nested: the outer guard decides
  const int64_t every = sample_every.load(std::memory_order_relaxed);
  if (every <= 0 || !have_sink.load(std::memory_order_relaxed)) return;
  const uint64_t n = forwards.fetch_add(1, std::memory_order_relaxed);
  if (n % static_cast<uint64_t>(every) != 0) return;
  sampled_ = true;
  timing.active = true;
}

NormForwardTiming::~NormForwardTiming() {
  --timing.depth;
  if (!sampled_) return;
  timing.active = false;
  const bool failed = std::uncaught_exceptions() > 0;  // a forward that threw reports nothing
  const std::shared_ptr<const NormTimingSink> s = failed ? nullptr : CurrentSink();
  for (int k = 0; k < kKinds; ++k) {
    for (int dev = 0; dev < kDevices; ++dev) {
      for (int t = 0; t < kDtypes; ++t) {
        NormTimingSlot& slot =
            timing.Slot(kAllKinds[k], static_cast<NormDevice>(dev), kAllDtypes[t]);
        if (slot.launches == 0) continue;
        double seconds = slot.cpu_seconds;
        bool ok = true;
        for (auto& [start, stop] : slot.events) {
          try {
            if (ok) seconds += 1e-3 * cuda::ElapsedMilliseconds(start, stop);
          } catch (...) {
            ok = false;  // a failed read drops this sample, never the forward
          }
          timing.free_events.insert(timing.free_events.end(), {start, stop});
        }
        slot.events.clear();
        slot.launches = 0;
        slot.cpu_seconds = 0;
        if (!s || !ok) continue;
        try {
          (*s)(NormKindName(kAllKinds[k]), dev == 0 ? "cpu" : "cuda", NormDtypeName(kAllDtypes[t]),
               seconds);
        } catch (...) {
        }
      }
    }
  }
}

NormLaunchTimer::NormLaunchTimer(NormKind kind, NormDevice device, NormDtype dtype, void* stream) {
  if (!timing.active) return;
  NormTimingSlot& slot = timing.Slot(kind, device, dtype);
  if (device == NormDevice::kCpu) {
    start_ns_ = NowNanoseconds();
    slot_ = &slot;
    return;
  }
  void* start = nullptr;
  void* stop = nullptr;
  try {
    start = timing.TakeEvent();
    stop = timing.TakeEvent();
    cuda::RecordTimingEvent(start, stream);
  } catch (...) {
    // Timing must never fail a request: this launch goes untimed.
    if (start != nullptr) timing.free_events.push_back(start);
    if (stop != nullptr) timing.free_events.push_back(stop);
    return;
  }
  slot.events.emplace_back(start, stop);
  stream_ = stream;
  stop_event_ = stop;
  slot_ = &slot;
}

NormLaunchTimer::~NormLaunchTimer() {
  if (slot_ == nullptr) return;
  if (stop_event_ == nullptr) {
    slot_->cpu_seconds += 1e-9 * static_cast<double>(NowNanoseconds() - start_ns_);
  } else {
    try {
      cuda::RecordTimingEvent(stop_event_, stream_);
    } catch (...) {
    }
  }
  ++slot_->launches;
}

}  // namespace normserve
