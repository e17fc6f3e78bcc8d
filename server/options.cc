#include "server/options.h"

#include <stdexcept>

namespace normserve {
namespace {

constexpr char kUsage[] = R"(usage: normserved --model-repository DIR [options]

Serves every model of DIR (DIR/<model>/<version>/config.json ...) over gRPC
(normserve.v1.NormServe, grpc.health.v1.Health, server reflection) and exports Prometheus
metrics at http://<metrics-address>/metrics.

  --model-repository DIR   the model repository (required)
  --grpc-address ADDR      gRPC listen address (default 0.0.0.0:50051; port 0 picks one)
  --metrics-address ADDR   metrics listen address (default 0.0.0.0:9464; "" disables)
  --threads N              LibTorch intra-op threads (default: all cores)
  --device cpu             compute device (cpu)
  --help                   this text
)";

}  // namespace

bool ParseServerOptions(const std::vector<std::string>& args, ServerOptions* o, std::string* help) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    const bool has_inline = flag.find('=') != std::string::npos;
    if (has_inline) {
      value = flag.substr(flag.find('=') + 1);
      flag = flag.substr(0, flag.find('='));
    }
    if (flag == "--help" || flag == "-h") {
      *help = kUsage;
      return false;
    }
    if (!has_inline) {
      if (i + 1 >= args.size()) throw std::invalid_argument(flag + " needs a value\n\n" + kUsage);
      value = args[++i];
    }
    if (flag == "--model-repository") {
      o->model_repository = value;
    } else if (flag == "--grpc-address") {
      o->grpc_address = value;
    } else if (flag == "--metrics-address") {
      o->metrics_address = value;
    } else if (flag == "--threads") {
      try {
        o->threads = std::stoi(value);
      } catch (const std::exception&) {
        o->threads = -1;
      }
      if (o->threads < 1) throw std::invalid_argument("--threads must be a positive integer");
    } else if (flag == "--device") {
      if (value != "cpu") {
        throw std::invalid_argument("--device " + value +
                                    ": this build serves on cpu only (the CUDA kernels are "
                                    "compiled but the bundled LibTorch has no CUDA)");
      }
      o->device = value;
    } else {
      throw std::invalid_argument("unknown flag " + flag + "\n\n" + kUsage);
    }
  }
  if (o->model_repository.empty()) {
    throw std::invalid_argument(std::string("--model-repository is required\n\n") + kUsage);
  }
  return true;
}

}  // namespace normserve
