#include "client/bench/report.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <set>

namespace normserve::bench {
namespace {

double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

std::string Format(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* format, ...) {
  char buffer[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  return buffer;
}

std::string StepName(const StepResult& step, bool rate_mode) {
  return rate_mode ? Format("%g", step.stats.rate) : std::to_string(step.stats.concurrency);
}

}  // namespace

std::string TableHeader(bool rate_mode) {
  return Format("%11s %9s %9s %7s%s %10s %10s %9s %9s %9s  %s\n",
                rate_mode ? "rate/s" : "concurrency", "requests", "ok", "errors",
                rate_mode ? "  dropped" : "", "req/s", "tokens/s", "p50 ms", "p90 ms", "p99 ms",
                "status codes");
}

std::string TableRow(const StepResult& step, bool rate_mode) {
  const StepSummary& s = step.summary;
  int64_t errors = 0;
  for (const auto& [name, count] : s.errors) errors += count;
  std::string codes;
  for (const auto& [name, count] : step.stats.codes) {
    codes += (codes.empty() ? "" : " ") + name + "=" + std::to_string(count);
  }
  if (codes.empty()) codes = "-";
  const std::string dropped = rate_mode ? Format(" %8lld", static_cast<long long>(s.dropped)) : "";
  return Format("%11s %9lld %9lld %7lld%s %10.2f %10.1f %9.1f %9.1f %9.1f  %s\n",
                StepName(step, rate_mode).c_str(), static_cast<long long>(s.requests),
                static_cast<long long>(s.ok), static_cast<long long>(errors), dropped.c_str(),
                s.throughput_rps, s.tokens_per_s, s.p50_ms, s.p90_ms, s.p99_ms, codes.c_str());
}

nlohmann::ordered_json StepJson(const StepResult& step, bool rate_mode) {
  const StepSummary& s = step.summary;
  nlohmann::ordered_json j;
  if (rate_mode) {
    j["rate"] = step.stats.rate;
  } else {
    j["concurrency"] = step.stats.concurrency;
  }
  j["requests"] = s.requests;
  j["ok"] = s.ok;
  j["errors"] = nlohmann::ordered_json::object();
  for (const auto& [name, count] : s.errors) j["errors"][name] = count;
  j["dropped"] = s.dropped;
  j["elapsed_s"] = Round3(s.elapsed_s);
  j["throughput_rps"] = Round3(s.throughput_rps);
  j["tokens"] = step.stats.tokens;
  j["tokens_per_s"] = Round3(s.tokens_per_s);
  j["p50_ms"] = Round3(s.p50_ms);
  j["p90_ms"] = Round3(s.p90_ms);
  j["p99_ms"] = Round3(s.p99_ms);
  j["mean_ms"] = Round3(s.mean_ms);
  j["max_ms"] = Round3(s.max_ms);
  if (rate_mode) j["max_send_lag_ms"] = Round3(step.stats.max_send_lag_ms);
  return j;
}

std::string Csv(const std::vector<StepResult>& steps, bool rate_mode) {
  std::set<std::string> codes;
  for (const auto& step : steps) {
    for (const auto& [name, count] : step.summary.errors) codes.insert(name);
  }
  std::string out = rate_mode ? "rate" : "concurrency";
  out +=
      ",requests,ok,errors,dropped,elapsed_s,throughput_rps,tokens,tokens_per_s,p50_ms,p90_ms,"
      "p99_ms,mean_ms,max_ms";
  if (rate_mode) out += ",max_send_lag_ms";
  for (const auto& code : codes) out += ",error_" + code;
  out += "\n";
  for (const auto& step : steps) {
    const StepSummary& s = step.summary;
    int64_t errors = 0;
    for (const auto& [name, count] : s.errors) errors += count;
    out += StepName(step, rate_mode);
    out += Format(",%lld,%lld,%lld,%lld,%.3f,%.3f,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f",
                  static_cast<long long>(s.requests), static_cast<long long>(s.ok),
                  static_cast<long long>(errors), static_cast<long long>(s.dropped), s.elapsed_s,
                  s.throughput_rps, static_cast<long long>(step.stats.tokens), s.tokens_per_s,
                  s.p50_ms, s.p90_ms, s.p99_ms, s.mean_ms, s.max_ms);
    if (rate_mode) out += Format(",%.3f", step.stats.max_send_lag_ms);
    for (const auto& code : codes) {
      const auto it = s.errors.find(code);
      out += "," + std::to_string(it == s.errors.end() ? 0 : it->second);
    }
    out += "\n";
  }
  return out;
}

}  // namespace normserve::bench
