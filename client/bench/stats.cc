#include "client/bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "proto/status_names.h"

namespace normserve::bench {

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double n = static_cast<double>(sorted.size());
  // The rank is 1-based; the small epsilon keeps p/100 * n = 90.0000000001 (floating point
  // noise on an exact rank) from rounding up to the next one.
  double rank = std::ceil(p / 100.0 * n - 1e-9);
  rank = std::clamp(rank, 1.0, n);
  return sorted[static_cast<size_t>(rank) - 1];
}

void StepStats::Record(int code, double latency_ms, int64_t response_tokens) {
  ++codes[StatusCodeName(code)];
  if (code != 0) return;
  latencies_ms.push_back(latency_ms);
  tokens += response_tokens;
}

StepSummary Summarize(const StepStats& stats) {
  StepSummary s;
  for (const auto& [name, count] : stats.codes) {
    s.requests += count;
    if (name == "OK") {
      s.ok = count;
    } else {
      s.errors[name] = count;
    }
  }
  s.dropped = stats.dropped;
  s.elapsed_s = stats.elapsed_s;
  if (stats.elapsed_s > 0) {
    s.throughput_rps = static_cast<double>(s.ok) / stats.elapsed_s;
    s.tokens_per_s = static_cast<double>(stats.tokens) / stats.elapsed_s;
  }
  std::vector<double> sorted = stats.latencies_ms;
  std::sort(sorted.begin(), sorted.end());
  s.p50_ms = Percentile(sorted, 50);
  s.p90_ms = Percentile(sorted, 90);
  s.p99_ms = Percentile(sorted, 99);
  if (!sorted.empty()) {
    s.mean_ms = std::accumulate(sorted.begin(), sorted.end(), 0.0) / sorted.size();
    s.max_ms = sorted.back();
  }
  return s;
}

}  // namespace normserve::bench
