#include "models/compute.h"

#include <ATen/Parallel.h>
#include <c10/core/Device.h>
#if defined(NORMSERVE_TORCH_CUDA)
#include <c10/cuda/CUDAFunctions.h>
#endif
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

namespace normserve {

int SetComputeThreads(int n) {
  const int threads =
      n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

void SetThreadComputeThreads(int n) {
  // ATen sets a thread's count from the process-wide one at the thread's first parallel
  // work; doing that first keeps it from overwriting ours later.
  at::get_num_threads();
  at::set_num_threads(std::max(1, n));
}

void KeepLargeBlocksForReuse() {
  // Up to glibc's largest mmap threshold; freed memory above 256 MiB goes back to the system.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

void RestartWithComputeEnvironment(char** argv, int threads) {
  if (std::getenv("NORMSERVE_COMPUTE_ENVIRONMENT") != nullptr) return;
  bool changed = false;
  if (std::getenv("OMP_NUM_THREADS") == nullptr && std::getenv("BLIS_NUM_THREADS") == nullptr) {
    const unsigned n = threads > 0 ? static_cast<unsigned>(threads)
                                   : std::max(1u, std::thread::hardware_concurrency());
    ::setenv("OMP_NUM_THREADS", std::to_string(n).c_str(), 1);
    changed = true;
  }
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  if (!changed) return;
  ::setenv("NORMSERVE_COMPUTE_ENVIRONMENT", "1", 1);
  // The binary's real path, so that the process keeps its name.
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  self[n] = '\0';
  ::execv(self, argv);  // returns only on failure: go on as we are
}

std::string CheckComputeDeviceName(const std::string& device) {
  try {
    const c10::Device d(device);
    if (d.is_cpu() || d.is_cuda()) return "";
    return "device '" + device + "' is not supported; use cpu or cuda[:N]";
  } catch (const std::exception&) {
    return "device '" + device + "' is not a device name; use cpu or cuda[:N]";
  }
}

std::string CheckComputeDevice(const std::string& device) {
  if (std::string why = CheckComputeDeviceName(device); !why.empty()) return why;
  const c10::Device d(device);
  if (d.is_cpu()) return "";
#if defined(NORMSERVE_TORCH_CUDA)
  // Without a driver or a GPU this is 0 (LibTorch may warn once why), never an exception.
  const int count = c10::cuda::device_count();
  if (count == 0) {
    return "no CUDA device is present: this build supports CUDA, but the CUDA driver reports "
           "no GPU on this machine (check nvidia-smi and CUDA_VISIBLE_DEVICES), or serve on cpu";
  }
  if (d.has_index() && d.index() >= count) {
    return "no CUDA device " + std::to_string(d.index()) + ": this machine has " +
           std::to_string(count) + " (cuda:0 to cuda:" + std::to_string(count - 1) + ")";
  }
  return "";
#else
  return "no CUDA device can be used: this build has no CUDA support (a CPU LibTorch or no "
         "nvcc at build time); build against a CUDA LibTorch (README \"GPU\") to serve on " +
         device;
#endif
}

}  // namespace normserve
