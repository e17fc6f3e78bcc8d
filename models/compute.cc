#include "models/compute.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/Device.h>

#include <thread>

namespace normserve {

int SetComputeThreads(int n) {
  const int threads = n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

std::string CheckComputeDevice(const std::string& device) {
  try {
    const c10::Device d(device);
    if (d.is_cpu()) return "";
    if (!d.is_cuda()) return "device '" + device + "' is not supported; use cpu or cuda[:N]";
  } catch (const std::exception&) {
    return "device '" + device + "' is not a device name; use cpu or cuda[:N]";
  }
  if (!at::hasCUDA()) {
    return "this build's LibTorch has no CUDA support (or no GPU is visible); build against "
           "a CUDA LibTorch to serve on " + device;
  }
  return "";
}

}  // namespace normserve
