// Sampled timing of the norm layers inside real forwards, for the server's
// normserve_norm_duration_seconds{norm,device,dtype} histogram (DESIGN.md section 6). The models
// library knows nothing of Prometheus: the server installs a sink, and this module reports to it.
//
// Sampling: a NormForwardTiming guard opens each forward (Transformer::Encode and ::Decode);
// one forward in N (SetNormTimingSampleEvery, default 16) is timed. Within a timed forward,
// every norm launch is timed (a steady clock on CPU; a pair of CUDA events on the launch's
// stream on GPU, read only when the forward ends), and the times are summed per
// (norm kind, device, dtype). When the forward ends, the sink gets one call per such triple:
// the seconds that kind of norm took in that forward. Forwards that are not sampled cost one
// relaxed atomic increment, and each of their norm launches one thread-local load.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "models/norm/norm_config.h"
#include "models/norm/norm_kernels.h"

namespace normserve {
namespace internal {
struct NormTimingSlot;
}

// norm: NormKindName ("layernorm", ...); device: "cpu" or "cuda"; dtype: "float32",
// "float16" or "bfloat16"; seconds: the total time of those norm layers in one forward.
// Called on the thread that ran the forward, after it ended; must not throw (exceptions are
// swallowed) and should be quick (e.g. a Prometheus Histogram::Observe).
using NormTimingSink = std::function<void(std::string_view norm, std::string_view device,
                                          std::string_view dtype, double seconds)>;

// Installs the process-wide sink, replacing the previous one; an empty function removes it
// (then no forward is timed). Thread-safe; forwards already running report to the sink that
// was installed when they ended.
void SetNormTimingSink(NormTimingSink sink);

// Times one forward in `every` (1: all of them; 0 or less: none). Default 16. Thread-safe.
void SetNormTimingSampleEvery(int64_t every);
int64_t NormTimingSampleEvery();

// RAII guard around one forward. Nested guards on the same thread belong to the outer one.
class NormForwardTiming {
 public:
  NormForwardTiming();
  ~NormForwardTiming();
  NormForwardTiming(const NormForwardTiming&) = delete;
  NormForwardTiming& operator=(const NormForwardTiming&) = delete;

  // Whether this guard times its forward.
  bool sampled() const { return sampled_; }

 private:
  bool sampled_ = false;
};

enum class NormDevice { kCpu, kCuda };

// Times one norm launch (the norm op, norm_op.cc, wraps each kernel in one) when the calling
// thread is inside a sampled forward; otherwise does nothing. `stream` is the cudaStream_t of
// a CUDA launch (null: the legacy default stream), unused on CPU.
class NormLaunchTimer {
 public:
  NormLaunchTimer(NormKind kind, NormDevice device, NormDtype dtype, void* stream);
  ~NormLaunchTimer();
  NormLaunchTimer(const NormLaunchTimer&) = delete;
  NormLaunchTimer& operator=(const NormLaunchTimer&) = delete;

 private:
  internal::NormTimingSlot* slot_ = nullptr;
  void* stream_ = nullptr;
  void* stop_event_ = nullptr;
  int64_t start_ns_ = 0;
};

}  // namespace normserve
