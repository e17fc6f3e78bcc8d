// The numbers of one load step and their summary: throughput, latency percentiles and the
// count of each gRPC status code.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace normserve::bench {

// The nearest-rank percentile of `sorted` (ascending): the smallest value v in it such that
// at least p percent of the values are <= v, i.e. sorted[ceil(p/100 * n) - 1], and
// sorted[0] for p = 0. p is in [0, 100]; an empty vector gives 0.
double Percentile(const std::vector<double>& sorted, double p);

// What one step measured. Only OK responses add latencies and tokens.
struct StepStats {
  int concurrency = 0;  // closed loop: the number of workers; 0 in rate mode
  double rate = 0;      // open loop: the mean arrival rate in requests/s; 0 in concurrency mode
  std::map<std::string, int64_t> codes;  // every measured response's status, OK included
  int64_t dropped = 0;   // open loop: arrivals not sent because max-outstanding were in flight
  int64_t tokens = 0;    // output tokens (translate) or scored tokens (score) of OK responses
  double elapsed_s = 0;  // the measurement window the throughputs divide by
  double max_send_lag_ms = 0;  // open loop: the latest a request left after its scheduled time
  std::vector<double> latencies_ms;  // of OK responses, in completion order

  void Record(int code, double latency_ms, int64_t response_tokens);
};

struct StepSummary {
  int64_t requests = 0;  // responses with any status; dropped arrivals are not requests
  int64_t ok = 0;
  std::map<std::string, int64_t> errors;  // the non-OK codes by name
  int64_t dropped = 0;
  double elapsed_s = 0;
  double throughput_rps = 0;  // OK responses per second
  double tokens_per_s = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, mean_ms = 0, max_ms = 0;  // over OK responses
};

StepSummary Summarize(const StepStats& stats);

}  // namespace normserve::bench
