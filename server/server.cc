#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "models/norm/norm_timing.h"
#include "server/auth.h"
#include "server/calls.h"
#include "server/kserve_http.h"
#include "server/kserve_service.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/model_repository.h"
#include "server/parse_failure_interceptor.h"
#include "server/service.h"
#include "server/tls.h"
#include "server/worker_pool.h"

namespace normserve {
namespace {

constexpr char kServiceName[] = "normserve.v1.NormServe";

std::shared_ptr<Batcher> MakeBatcher(const std::string& name, const BatcherConfig& config,
                                     Metrics* metrics) {
  metrics->SetMaxQueueSize(name, config.max_queue_size);
  BatcherObserver observer;
  observer.queue_depth = [metrics, name](int64_t depth) { metrics->SetQueueDepth(name, depth); };
  observer.queued_for = [metrics, name](double s) { metrics->RecordQueueTime(name, s); };
  observer.batch_formed = [metrics, name](int64_t requests, int64_t tokens) {
    metrics->RecordBatch(name, requests, tokens);
  };
  std::vector<std::unique_ptr<BatchRunner>> instances;
  for (int i = 0; i < config.instances; ++i) {
    instances.push_back(std::make_unique<ModelRunner>(metrics, config, i));
  }
  return std::make_shared<Batcher>(name, config, std::move(instances), observer);
}

// Authentication and whether admin RPCs exist, decided before anything listens or loads
// (README "Security"): --model-control explicit needs an admin token, or
// --allow-unauthenticated-admin for local use.
std::unique_ptr<Authorizer> MakeAuthorizer(const ServerOptions& options) {
  const bool explicit_control = options.model_control == ModelControl::kExplicit;
  if (options.auth_tokens_file.empty()) {
    if (explicit_control && !options.allow_unauthenticated_admin) {
      throw std::runtime_error(
          "--model-control explicit lets callers load and unload models, and this server has "
          "no --auth-tokens-file: give one with an \"admin TOKEN\" line, or "
          "--allow-unauthenticated-admin for local use");
    }
    LogInfo(std::string("warning: no --auth-tokens-file, so no authentication: every caller "
                        "that reaches the gRPC port can run inference and list models") +
            (options.allow_unauthenticated_admin
                 ? "; --allow-unauthenticated-admin: every caller can also load and unload "
                   "models and see their paths"
                 : ""));
    return Authorizer::Open(options.allow_unauthenticated_admin);
  }
  auto authorizer = Authorizer::FromFile(options.auth_tokens_file);
  const int admin_tokens = authorizer->count(Scope::kAdmin);
  if (explicit_control && admin_tokens == 0) {
    throw std::runtime_error(
        "--model-control explicit needs an admin token, and --auth-tokens-file " +
        options.auth_tokens_file + " has none: add an \"admin TOKEN\" line");
  }
  LogInfo("authentication: " + std::to_string(authorizer->count(Scope::kInfer)) + " infer and " +
          std::to_string(admin_tokens) + " admin token(s) from " + options.auth_tokens_file +
          " (re-read when it changes); every RPC but health needs 'authorization: Bearer "
          "<token>'; server reflection " +
          (options.enable_reflection ? "is served without a token (--enable-reflection)"
                                     : "is off (--enable-reflection serves it)"));
  return authorizer;
}

// Serves server reflection on one server or not. Linking gRPC's reflection library
// registers its plugin with every ServerBuilder of the process (a static initializer), so the
// option takes it out, and puts a fresh one back when reflection is wanted.
class ReflectionOption : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool serve) : serve_(serve) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    const std::string name = grpc::reflection::ProtoServerReflectionPlugin().name();
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [&](const auto& plugin) { return plugin->name() == name; }),
                   plugins->end());
    if (serve_)
      plugins->push_back(std::make_unique<grpc::reflection::ProtoServerReflectionPlugin>());
  }

 private:
  const bool serve_;
};

}  // namespace

NormServer::NormServer(const ServerOptions& options)
    : options_(options),
      authorizer_(MakeAuthorizer(options)),
      metrics_(std::make_unique<Metrics>(options.metrics_address)),
      management_(std::make_unique<WorkerPool>(1)) {
  // Before the models load: a bad certificate file stops the start at once.
  const auto credentials = MakeServerCredentials(options.tls);
  Metrics* metrics = metrics_.get();
  repository_ = std::make_unique<ModelRepository>(
      options.model_repository, options.batching,
      [device = options.device](const std::string& dir, const std::string& name, int64_t version,
                                const ModelServingConfig& serving) {
        return LoadAndWarmUp(dir, name, version, device, serving);
      },
      metrics,
      [metrics](const std::string& name, const BatcherConfig& config) {
        return MakeBatcher(name, config, metrics);
      },
      [this](const std::string& name, bool ready) { SetHealth(name, ready); });
  // The norm layers' time inside sampled forwards (models/norm/norm_timing.h).
  SetNormTimingSink([metrics](std::string_view norm, std::string_view device,
                              std::string_view dtype, double seconds) {
    metrics->RecordNormTime(std::string(norm), std::string(device), std::string(dtype), seconds);
  });
  repository_->LoadAll();
  service_ = std::make_unique<NormServeService>(repository_.get(), metrics, options.model_control,
                                                management_.get(), options.limits,
                                                options.tokenizer_threads, authorizer_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // Reflection cannot check tokens: with tokens it is served only when asked.
  builder.SetOption(std::make_unique<ReflectionOption>(options.auth_tokens_file.empty() ||
                                                       options.enable_reflection));
  builder.AddListeningPort(options.grpc_address, credentials, &grpc_port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             static_cast<int>(options.max_metadata_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<ParseFailureInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.RegisterService(service_.get());
  kserve_ = std::make_unique<KServeService>(repository_.get());
  builder.RegisterService(kserve_.get());
  {
    std::lock_guard<std::mutex> lock(health_mutex_);
    server_ = builder.BuildAndStart();
  }
  if (!server_ || grpc_port_ == 0) {
    throw std::runtime_error("cannot listen for gRPC on " + options.grpc_address);
  }
  // The Open Inference Protocol's calls become NormServe's inside the process (gRPC's
  // in-process transport), so that both APIs share one path through tokens, limits and
  // batchers. Responses are bounded by NormServe's own limits, not by a client default.
  grpc::ChannelArguments in_process;
  in_process.SetMaxReceiveMessageSize(-1);
  in_process.SetMaxSendMessageSize(-1);
  const auto channel = server_->InProcessChannel(in_process);
  kserve_->Connect(channel);
  if (!options.http_address.empty()) {
    http_ = std::make_unique<KServeHttpEndpoint>(options.http_address, channel,
                                                 static_cast<size_t>(options.max_message_bytes));
  }
  // What changed before the server existed was not told to its health service.
  repository_->PublishReadiness();
  if (options.model_control == ModelControl::kPoll) {
    repository_->StartPolling(
        std::chrono::milliseconds(static_cast<int64_t>(options.repository_poll_secs * 1000)));
  }
  LogInfo("normserved listening for gRPC on port " + std::to_string(grpc_port_) +
          ", metrics on port " + std::to_string(metrics_port()) +
          (http_ ? ", Open Inference Protocol HTTP on port " + std::to_string(http_port()) : "") +
          ", " + std::to_string(repository_->ready_count()) + " model(s) ready");
}

NormServer::~NormServer() {
  Shutdown();
  // No load and no health change after this point.
  repository_->StopLoading();
  SetNormTimingSink({});  // the metrics go with this server
}

int NormServer::metrics_port() const { return metrics_->port(); }

int NormServer::http_port() const { return http_ ? http_->port() : 0; }

void NormServer::Wait() { server_->Wait(); }

// Health: every model and group by name, exactly its readiness, and the server as a whole
// ("" and the service name) while any model serves. The whole-server names are set by name:
// SetServingStatus(bool) would overwrite every model's status too.
void NormServer::SetHealth(const std::string& name, bool serving) {
  std::lock_guard<std::mutex> lock(health_mutex_);
  if (!server_) return;
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(name, serving);
  const bool any = repository_->ready_count() > 0;
  health->SetServingStatus("", any);
  health->SetServingStatus(kServiceName, any);
}

void NormServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    const auto grace =
        std::chrono::milliseconds(static_cast<int64_t>(options_.shutdown_grace_secs * 1000));
    const auto deadline = std::chrono::system_clock::now() + grace;
    {
      std::lock_guard<std::mutex> lock(health_mutex_);
      server_->GetHealthCheckService()->Shutdown();  // everything NOT_SERVING from now on
    }
    // The grace is a bound: queued calls are rejected and running model work stops at its
    // end, so the batchers' Stop below returns by then (plus one decoding step).
    kserve_->StartDraining();
    service_->StartDraining(Clock::now() + grace);
    std::vector<std::thread> drains;
    for (auto& batcher : repository_->batchers()) {
      drains.emplace_back([batcher, grace] { batcher->Stop(grace); });
    }
    for (auto& t : drains) t.join();
    // Calls still running at the deadline are cancelled.
    server_->Shutdown(deadline);
    http_.reset();  // its calls ended with the gRPC server's
    LogInfo("drained");
  });
}

}  // namespace normserve
