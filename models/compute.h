// Process-wide compute settings: LibTorch's threads and the device models run on.
#pragma once

#include <string>

namespace normserve {

// Sets LibTorch's intra-op threads (and OpenMP's): n > 0, or all cores for 0. LibTorch 1.13
// otherwise picks 1 thread on a 2-core machine. Returns the number in effect.
int SetComputeThreads(int n);

// Sets the intra-op threads of ATen's parallel work started from the calling thread (OpenMP
// keeps the count per thread), so that each model instance runs its kernels on its own
// count. BLIS's GEMMs ignore it: Debian's BLIS 0.9 keeps one count for the process.
void SetThreadComputeThreads(int n);

// Two settings that at::set_num_threads does not reach and that the libraries read when they
// load: Debian's BLIS runs its GEMMs on one thread unless OMP_NUM_THREADS (or
// BLIS_NUM_THREADS) says otherwise (27 against 53 GFLOP/s on 2 cores), and OpenMP threads
// that spin while they wait starve the working threads on a busy machine (3x slower training
// on 2 shared cores). Unless the caller set them, re-executes the program once with
// OMP_NUM_THREADS = threads (0: all cores) and OMP_WAIT_POLICY=PASSIVE; returns otherwise.
void RestartWithComputeEnvironment(char** argv, int threads);

// The tensors of a decoding step or a Score batch are megabytes each. glibc maps every block
// above its mmap threshold afresh and unmaps it when freed, so each step paid page faults to
// zero its memory again (a fifth of a Score batch's time on deen). This keeps freed blocks
// of up to 32 MiB in the heap for the next step to reuse.
void KeepLargeBlocksForReuse();

// The exit status of normserved when --device names a device it cannot use here: a build
// without CUDA support, a machine whose CUDA driver reports no GPU, or an index beyond the
// GPUs present (README "GPU"). Distinct from 2 (a malformed command line), so that a
// deployment can tell "this node has no GPU" from a typo.
constexpr int kNoComputeDeviceExitCode = 3;

// "" when `device` names a device models may be asked to run on ("cpu", "cuda", "cuda:N"),
// else why not. Says nothing about whether this build or machine has one.
std::string CheckComputeDeviceName(const std::string& device);

// "" when models can run on `device` here, else why not; for a CUDA device that this build or
// machine lacks the reason starts with "no CUDA device".
std::string CheckComputeDevice(const std::string& device);

}  // namespace normserve
