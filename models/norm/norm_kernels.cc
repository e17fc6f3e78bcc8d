// The torch-free parts of the raw norm API: names, argument checks, the CPU row-kernel choice,
// and the CUDA entry points of a build without CUDA.
#include "models/norm/norm_kernels.h"

#include <atomic>
#include <stdexcept>
#include <string>

#include "models/norm/norm_cpu_rows.h"

namespace normserve {

const char* NormDtypeName(NormDtype dtype) {
  switch (dtype) {
    case NormDtype::kFloat32:
      return "float32";
    case NormDtype::kFloat16:
      return "float16";
    case NormDtype::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

int NormDtypeSize(NormDtype dtype) { return dtype == NormDtype::kFloat32 ? 4 : 2; }

void ValidateNormArgs(const NormKernelArgs& a) {
  const auto fail = [](const std::string& what) {
    throw std::invalid_argument("norm kernel: " + what);
  };
  if (a.rows < 0 || a.d < 0) fail("negative rows or channels");
  if (a.dtype != NormDtype::kFloat32 && a.dtype != NormDtype::kFloat16 &&
      a.dtype != NormDtype::kBFloat16) {
    fail("unknown dtype");
  }
  if (a.rows == 0 || a.d == 0) return;
  if (a.x == nullptr || a.y == nullptr || a.scale == nullptr) fail("null x, y or scale");
  if (a.x_stride < 0) fail("negative x row stride");
  if (a.rows > 1 && a.y_stride < a.d) fail("y rows overlap (y_stride < d)");
  if (a.residual != nullptr && a.rows > 1 && a.residual_stride < a.d) {
    fail("residual rows overlap (residual_stride < d)");
  }
  switch (a.statistic) {
    case RowStatistic::kNone:
    case RowStatistic::kMeanVariance:
    case RowStatistic::kCompressedMeanSquare:
      break;
    case RowStatistic::kMeanSquare:
      if (a.stat_channels < 0 || a.stat_channels > a.d) {
        fail("stat_channels " + std::to_string(a.stat_channels) +
             " out of range for d = " + std::to_string(a.d));
      }
      break;
    case RowStatistic::kGroupMeanSquare:
      if (a.groups < 1 || a.d % a.groups != 0) {
        fail("groups (" + std::to_string(a.groups) + ") must divide the hidden size " +
             std::to_string(a.d));
      }
      break;
    default:
      fail("unknown statistic");
  }
}

namespace cpu {
namespace {

std::atomic<bool> force_generic{false};

bool CpuHasAvx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has && avx2::Built();
#else
  return false;
#endif
}

}  // namespace

NormRowsFn SelectedNormRows() {
  return !force_generic.load(std::memory_order_relaxed) && CpuHasAvx2() ? &avx2::NormRows
                                                                        : &generic::NormRows;
}

const char* KernelIsa() { return SelectedNormRows() == &avx2::NormRows ? "avx2" : "generic"; }

void ForceGenericKernels(bool force) { force_generic.store(force); }

}  // namespace cpu

#if !defined(NORMSERVE_HAVE_CUDA)
namespace cuda {
namespace {
[[noreturn]] void NoCuda() {
  throw std::runtime_error("normserve was built without the CUDA kernels (no nvcc found)");
}
}  // namespace

bool Compiled() { return false; }
int DeviceCount() { return 0; }
void RunNorm(const NormKernelArgs&, void*) { NoCuda(); }
void* CreateTimingEvent() { NoCuda(); }
void DestroyTimingEvent(void*) {}
void RecordTimingEvent(void*, void*) { NoCuda(); }
float ElapsedMilliseconds(void*, void*) { NoCuda(); }
}  // namespace cuda
#endif

}  // namespace normserve
