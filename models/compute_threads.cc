#include "models/compute_threads.h"

#include <ATen/Parallel.h>

#include <thread>

namespace normserve {

int SetComputeThreads(int n) {
  const int threads = n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return at::get_num_threads();
}

}  // namespace normserve
