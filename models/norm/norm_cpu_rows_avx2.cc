// The CPU row kernels built with -mavx2 -mfma -mf16c (models/CMakeLists.txt sets the flags on
// this file only); norm_op_cpu.cc calls them only after checking the CPU has the three.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define NORMSERVE_CPU_ISA avx2
#include "models/norm/norm_cpu_rows_impl.h"
namespace normserve::cpu::avx2 {
bool Built() { return true; }
}  // namespace normserve::cpu::avx2
#else
// Built without the flags (a compiler or CPU family without them): the baseline kernels.
#include "models/norm/norm_cpu_rows.h"
namespace normserve::cpu::avx2 {
void NormRows(const NormKernelArgs& args, int64_t begin, int64_t end, float* buffer,
              bool stream_output) {
  generic::NormRows(args, begin, end, buffer, stream_output);
}
bool Built() { return false; }
}  // namespace normserve::cpu::avx2
#endif
