#pragma once

namespace normserve {

// Sets LibTorch's intra-op threads (and OpenMP's): n > 0, or all cores for 0. LibTorch 1.13
// otherwise picks 1 thread on a 2-core machine. Returns the number in effect.
int SetComputeThreads(int n);

}  // namespace normserve
