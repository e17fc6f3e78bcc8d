// normserved: serves the models of a repository over gRPC until SIGINT or SIGTERM.
#include <signal.h>

#include <iostream>
#include <thread>

#include "models/compute.h"
#include "server/log.h"
#include "server/server.h"

int main(int argc, char** argv) {
  normserve::ServerOptions options;
  if (const auto exit_status = normserve::ParseServerOptions(argc, argv, &options)) {
    return *exit_status;
  }

  normserve::RestartWithComputeEnvironment(argv, options.batching.threads);
  // Before anything starts: a node without the GPU that --device names is a deployment
  // error of its own (exit 3), not a malformed command line (exit 2).
  if (const std::string why = normserve::CheckComputeDevice(options.device); !why.empty()) {
    std::cerr << "normserved: --device " << options.device << ": " << why << "\n";
    return normserve::kNoComputeDeviceExitCode;
  }
  // Signals are taken by a dedicated thread with sigwait, so shutdown runs as ordinary code.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int threads = normserve::SetComputeThreads(options.batching.threads);
  normserve::KeepLargeBlocksForReuse();
  normserve::LogInfo("compute threads: " + std::to_string(threads));
  std::unique_ptr<normserve::NormServer> server;
  try {
    server = std::make_unique<normserve::NormServer>(options);
  } catch (const std::exception& e) {
    normserve::LogError(std::string("cannot start: ") + e.what());
    return 1;
  }
  std::thread signal_waiter([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    normserve::LogInfo(std::string("received ") + (signal == SIGTERM ? "SIGTERM" : "SIGINT") +
                       ", shutting down");
    server->Shutdown();
  });
  server->Wait();
  signal_waiter.join();
  normserve::LogInfo("stopped");
  return 0;
}
