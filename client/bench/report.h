// normserve-bench's output: the table on stdout, the JSON and the CSV files.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/bench/stats.h"

namespace normserve::bench {

struct StepResult {
  StepStats stats;
  StepSummary summary;
};

// The table's header and one row per step; `rate_mode` picks the first column.
std::string TableHeader(bool rate_mode);
std::string TableRow(const StepResult& step, bool rate_mode);

// One object per step: concurrency (or rate), requests, ok, errors (name -> count), dropped,
// elapsed_s, throughput_rps, tokens, tokens_per_s, p50_ms, p90_ms, p99_ms, mean_ms, max_ms,
// and in rate mode max_send_lag_ms.
nlohmann::ordered_json StepJson(const StepResult& step, bool rate_mode);

// A header line and one line per step; a column error_CODE for each code any step saw.
std::string Csv(const std::vector<StepResult>& steps, bool rate_mode);

}  // namespace normserve::bench
