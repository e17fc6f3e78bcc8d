// normserve-bench: a gRPC load generator for normserved (DESIGN.md section 8).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

#include "client/auth_token.h"
#include "client/bench/load_runner.h"
#include "client/bench/options.h"
#include "client/bench/report.h"
#include "client/bench/stats.h"
#include "client/bench/texts.h"
#include "client/channel.h"
#include "common/command_line.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "proto/status_names.h"

namespace normserve::bench {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

int Fail(const std::string& what) {
  std::cerr << "normserve-bench: error: " << what << "\n";
  return 1;
}

int FailStatus(const grpc::Status& status, const std::string& context = "") {
  return Fail(std::string(StatusCodeName(status.error_code())) + ": " + context +
              status.error_message());
}

std::string IsoTimeNow() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
}

int Run(const BenchOptions& o) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < o.connections; ++i) {
    grpc::ChannelArguments args;
    // A channel of its own subchannels: one more TCP connection rather than a shared one.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(client::MakeChannel(o.server, o.tls, args));
  }

  const std::string token = o.token_file.empty() ? "" : client::ReadTokenFile(o.token_file);
  // What the model is decides the default RPC and what a score request carries; for a
  // variant group, what its serving members are.
  v1::ModelInfo info;
  {
    const auto stub = v1::NormServe::NewStub(channels[0]);
    const auto prepare = [&](grpc::ClientContext* context) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::milliseconds(std::min<int64_t>(o.timeout_ms, 10000)));
      client::AttachToken(context, token);
    };
    grpc::ClientContext context;
    prepare(&context);
    v1::GetModelRequest request;
    request.set_model(o.model);
    grpc::Status status = stub->GetModel(&context, request, &info);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return FailStatus(status, "cannot reach normserved at " + o.server + ": ");
    }
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      grpc::ClientContext list_context;
      prepare(&list_context);
      v1::ListModelsResponse models;
      if (stub->ListModels(&list_context, v1::ListModelsRequest(), &models).ok()) {
        for (const v1::ModelInfo& member : models.models()) {
          if (member.group() == o.model && member.ready()) {
            info = member;
            status = grpc::Status::OK;
            break;
          }
        }
      }
    }
    if (!status.ok()) return FailStatus(status);
  }
  if (!info.ready()) {
    return Fail("FAILED_PRECONDITION: model '" + o.model + "' is not ready (state " +
                ModelStateName(info.state()) + (info.error().empty() ? "" : ": " + info.error()) +
                ")");
  }
  const bool mt = info.architecture() == "transformer_mt";
  const std::string rpc_name = o.rpc.empty() ? (mt ? "translate" : "score") : o.rpc;
  if (rpc_name == "translate" && !mt) {
    throw std::invalid_argument("model '" + o.model + "' is a " + info.architecture() +
                                ", which does not translate; use --rpc score");
  }

  LoadConfig config;
  config.channels = channels;
  config.model = o.model;
  config.rpc = rpc_name == "translate" ? Rpc::kTranslate : Rpc::kScore;
  config.pairs = config.rpc == Rpc::kScore && mt;
  config.texts = o.texts_path.empty() ? BuiltinTexts() : LoadTexts(o.texts_path, config.pairs);
  const size_t text_count = config.texts.size();
  config.batch = o.batch;
  config.beam = o.beam;
  config.warmup_s = o.warmup_s;
  config.duration_s = o.duration_s;
  config.requests = o.requests;
  config.timeout_ms = o.timeout_ms;
  config.max_outstanding = o.max_outstanding;
  config.seed = o.seed;
  config.token = token;
  config.stop = &g_stop;
  LoadRunner runner(std::move(config));

  if (const grpc::Status status = runner.Probe(); !status.ok()) {
    return FailStatus(status, "the first " + rpc_name + " request failed: ");
  }

  const bool rate_mode = !o.rates.empty();
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%g s", o.duration_s.value_or(0));
  const std::string length = o.duration_s ? seconds : std::to_string(*o.requests) + " requests";
  std::printf("normserve-bench: %s (%s, %s, version %lld) at %s, rpc %s, %zu texts, batch %d\n",
              o.model.c_str(), info.architecture().c_str(), info.norm().c_str(),
              static_cast<long long>(info.version()), o.server.c_str(), rpc_name.c_str(),
              text_count, o.batch);
  std::printf(
      "%s per step after %g s warmup; latency percentiles of OK responses, nearest rank\n\n",
      length.c_str(), o.warmup_s);
  std::printf("%s", TableHeader(rate_mode).c_str());
  std::fflush(stdout);

  const std::string started_at = IsoTimeNow();
  std::vector<StepResult> steps;
  const size_t count = rate_mode ? o.rates.size() : o.concurrency.size();
  for (size_t i = 0; i < count && !g_stop.load(); ++i) {
    StepResult step;
    if (rate_mode) {
      std::fprintf(stderr, "step %zu/%zu: rate %g/s for %s\n", i + 1, count, o.rates[i],
                   length.c_str());
      step.stats = runner.RunRate(o.rates[i]);
    } else {
      std::fprintf(stderr, "step %zu/%zu: concurrency %d for %s\n", i + 1, count, o.concurrency[i],
                   length.c_str());
      step.stats = runner.RunConcurrency(o.concurrency[i]);
    }
    step.summary = Summarize(step.stats);
    std::printf("%s", TableRow(step, rate_mode).c_str());
    std::fflush(stdout);
    if (rate_mode && step.stats.max_send_lag_ms > 100) {
      std::fprintf(stderr,
                   "warning: the client sent a request %.0f ms after its scheduled time; its "
                   "latencies include that wait\n",
                   step.stats.max_send_lag_ms);
    }
    steps.push_back(std::move(step));
  }
  const bool interrupted = g_stop.load();
  if (interrupted)
    std::fprintf(stderr, "interrupted: writing the %zu finished steps\n", steps.size());

  if (!o.json_path.empty()) {
    nlohmann::ordered_json j;
    j["tool"] = "normserve-bench";
    j["started_at"] = started_at;
    j["server"] = o.server;
    j["model"] = o.model;
    j["version"] = info.version();
    j["architecture"] = info.architecture();
    j["norm"] = info.norm();
    j["rpc"] = rpc_name;
    j["mode"] = rate_mode ? "rate" : "concurrency";
    j["duration_secs"] =
        o.duration_s ? nlohmann::ordered_json(*o.duration_s) : nlohmann::ordered_json(nullptr);
    j["requests_per_step"] =
        o.requests ? nlohmann::ordered_json(*o.requests) : nlohmann::ordered_json(nullptr);
    j["warmup_secs"] = o.warmup_s;
    j["batch"] = o.batch;
    j["beam"] = o.beam ? nlohmann::ordered_json(*o.beam) : nlohmann::ordered_json(nullptr);
    j["timeout_ms"] = o.timeout_ms;
    j["connections"] = o.connections;
    if (rate_mode) {
      j["max_outstanding"] = o.max_outstanding;
      j["seed"] = o.seed;
    }
    j["texts"] = o.texts_path.empty() ? "builtin" : o.texts_path;
    j["percentiles"] = "nearest-rank, OK responses";
    j["interrupted"] = interrupted;
    j["steps"] = nlohmann::ordered_json::array();
    for (const auto& step : steps) j["steps"].push_back(StepJson(step, rate_mode));
    WriteFile(o.json_path, j.dump(2) + "\n");
  }
  if (!o.csv_path.empty()) WriteFile(o.csv_path, Csv(steps, rate_mode));
  return interrupted ? 130 : 0;
}

}  // namespace
}  // namespace normserve::bench

int main(int argc, char** argv) {
  using namespace normserve::bench;
  BenchOptions options;
  if (const auto exit_status = ParseBenchOptions(argc, argv, &options)) return *exit_status;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    return Run(options);
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-bench: " << e.what() << "\n";
    return normserve::command_line::kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "normserve-bench: error: " << e.what() << "\n";
    return 1;
  }
}
