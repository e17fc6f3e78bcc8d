#include "models/norm/norm_op_cpu.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <string>
#include <vector>

#include "models/norm/norm_cpu_rows.h"

namespace normserve::cpu {
namespace {

// The last-level cache of CPU 0 (sysfs, else sysconf, else 8 MiB).
int64_t LastLevelCacheBytes() {
  for (int index = 4; index >= 0; --index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string size;
    if (!(in >> size) || size.empty()) continue;
    int64_t v = std::atoll(size.c_str());
    if (size.back() == 'K') v <<= 10;
    if (size.back() == 'M') v <<= 20;
    if (v > 0) return v;
  }
  const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return v > 0 ? v : int64_t{8} << 20;
}

std::atomic<int64_t>& StreamingThreshold() {
  static std::atomic<int64_t> threshold{LastLevelCacheBytes()};
  return threshold;
}

}  // namespace

int64_t StreamingThresholdBytes() { return StreamingThreshold().load(); }
void SetStreamingThresholdBytes(int64_t bytes) { StreamingThreshold().store(bytes); }

void RunNorm(const NormKernelArgs& args) {
  ValidateNormArgs(args);
  if (args.rows == 0 || args.d == 0) return;
  const NormRowsFn rows_fn = SelectedNormRows();
  const bool stream = args.rows * args.d * NormDtypeSize(args.dtype) >= StreamingThreshold().load();
  // At least ~16K elements per task: below that the fork/join costs more than it saves.
  const int64_t grain = std::max<int64_t>(1, (16384 + args.d - 1) / args.d);
  at::parallel_for(0, args.rows, grain, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    const auto size = static_cast<size_t>(RowBufferFloats(args.d));
    if (buffer.size() < size) buffer.resize(size);
    rows_fn(args, begin, end, buffer.data(), stream);
  });
}

}  // namespace normserve::cpu
