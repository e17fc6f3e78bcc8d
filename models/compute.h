// Process-wide compute settings: LibTorch's threads and the device models run on.
#pragma once

#include <string>

namespace normserve {

// Sets LibTorch's intra-op threads (and OpenMP's): n > 0, or all cores for 0. LibTorch 1.13
// otherwise picks 1 thread on a 2-core machine. Returns the number in effect.
int SetComputeThreads(int n);

// "" when models can run on `device` ("cpu", "cuda", "cuda:N"), else why not.
std::string CheckComputeDevice(const std::string& device);

}  // namespace normserve
