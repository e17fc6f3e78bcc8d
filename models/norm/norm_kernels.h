// The raw-pointer level of the norm op, below NormForward (norm_op.h): plain data and plain
// functions, no ATen, so that the CUDA kernels (norm_op_cuda.cu) and the per-ISA CPU kernels
// (norm_cpu_rows*.cc) compile without ATen headers, and tests and the benchmark can drive the
// kernels on raw buffers (cudaMalloc'ed ones on a GPU).
//
// For every row i < rows, with h = x[i] (plain form) or h = x[i] + residual[i] rounded to the
// storage dtype and written back to residual[i] (fused form):
//
//   y[i][c] = (h[c] - mu) * rstd * scale[c] + shift[c]
//
// with mu and rstd from h as `statistic` says (DESIGN.md section 3), all arithmetic in fp32.
#pragma once

#include <cstdint>

namespace normserve {

enum class RowStatistic {
  kNone,             // BatchNorm: a fixed per-channel affine map
  kMeanVariance,     // LayerNorm
  kMeanSquare,       // (p)RMSNorm: mean of x^2 over the first stat_channels channels
  kGroupMeanSquare,  // PowerNorm: mean of x^2 within each of `groups` channel groups
  // CRMSNorm: the row holds the first d channels of a zero-mean row of d + 1, whose last
  // channel is -sum(x); ms = (sum(x^2) + sum(x)^2) / (d + 1), mu = 0.
  kCompressedMeanSquare,
};

// Storage dtype of x, residual and y (scale and shift are always fp32).
enum class NormDtype { kFloat32, kFloat16, kBFloat16 };

const char* NormDtypeName(NormDtype dtype);  // "float32", "float16", "bfloat16"
int NormDtypeSize(NormDtype dtype);

struct NormKernelArgs {
  const void* x = nullptr;  // [rows, d] with row stride x_stride (elements), unit channel stride
  int64_t x_stride = 0;
  void* residual = nullptr;  // fused form only: [rows, d], updated in place; null: plain form
  int64_t residual_stride = 0;
  void* y = nullptr;  // [rows, d]
  int64_t y_stride = 0;
  int64_t rows = 0;
  int64_t d = 0;
  NormDtype dtype = NormDtype::kFloat32;
  RowStatistic statistic = RowStatistic::kMeanVariance;
  int64_t stat_channels = 0;  // kMeanSquare: channels [0, stat_channels) give the statistic
  int64_t groups = 1;         // kGroupMeanSquare: equal channel groups; divides d
  float eps = 1e-5f;
  bool eps_inside_sqrt = true;   // rstd = 1/sqrt(s + eps), else 1/(sqrt(s) + eps)
  const float* scale = nullptr;  // [d], on the device of x
  const float* shift = nullptr;  // [d] or null
};

// Throws std::invalid_argument naming the first thing wrong with the arguments (null pointers,
// sizes, strides, stat_channels, groups). Both RunNorm functions call it.
void ValidateNormArgs(const NormKernelArgs& args);

namespace cpu {

// Computes every row on the calling thread's ATen intra-op thread pool (at::parallel_for).
// Host pointers. Output rows may alias neither x nor residual.
void RunNorm(const NormKernelArgs& args);

// Which row kernels RunNorm uses: the AVX2+FMA+F16C build when the CPU has them ("avx2"),
// else the baseline x86-64 build ("generic"). Tests force the generic one to cover both.
const char* KernelIsa();
void ForceGenericKernels(bool force);

// Outputs of at least this many bytes are written with non-temporal stores (they would not
// stay in the caches anyway, and streaming them saves the read-for-ownership of every line).
// Default: the last-level cache size. Tests set 0 (always) or a huge value (never).
int64_t StreamingThresholdBytes();
void SetStreamingThresholdBytes(int64_t bytes);

}  // namespace cpu

namespace cuda {

// True when this build has the CUDA kernels (NORMSERVE_HAVE_CUDA).
bool Compiled();
// Number of usable CUDA devices: 0 without a driver or a GPU (never throws).
int DeviceCount();

// Launches the kernel on `stream` (a cudaStream_t; null: the legacy default stream) for the
// current device. Device pointers. Checks the launch; does not synchronize. Throws
// std::runtime_error on any CUDA error, and when the build has no CUDA kernels.
void RunNorm(const NormKernelArgs& args, void* stream);

// Event helpers for the norm timing (norm_timing.cc), so that it needs no CUDA headers.
void* CreateTimingEvent();
void DestroyTimingEvent(void* event);
void RecordTimingEvent(void* event, void* stream);
// Waits for `stop` and returns the milliseconds between the two events.
float ElapsedMilliseconds(void* start, void* stop);

}  // namespace cuda
}  // namespace normserve
