// The CPU row kernels, compiled twice: norm_cpu_rows_generic.cc (baseline x86-64) and
// norm_cpu_rows_avx2.cc (-mavx2 -mfma -mf16c); norm_op_cpu.cc picks one at run time and
// splits the rows over ATen's thread pool. No ATen here.
#pragma once

#include <cstdint>

#include "models/norm/norm_kernels.h"

namespace normserve::cpu {

// Floats of scratch space NormRows needs for rows of d channels.
inline int64_t RowBufferFloats(int64_t d) { return 2 * d + 32; }

// Computes rows [begin, end) of `args` on the calling thread. `buffer` holds
// RowBufferFloats(args.d) floats, private to the caller. stream_output: write y with
// non-temporal stores (for outputs larger than the last-level cache).
using NormRowsFn = void (*)(const NormKernelArgs& args, int64_t begin, int64_t end, float* buffer,
                            bool stream_output);

namespace generic {
void NormRows(const NormKernelArgs& args, int64_t begin, int64_t end, float* buffer,
              bool stream_output);
}
namespace avx2 {
void NormRows(const NormKernelArgs& args, int64_t begin, int64_t end, float* buffer,
              bool stream_output);
bool Built();  // false where the compiler had no AVX2/FMA/F16C flags: then it is generic
}  // namespace avx2

// The kernels for this CPU: avx2 when the CPU has AVX2, FMA and F16C (and ForceGenericKernels
// is off), else generic.
NormRowsFn SelectedNormRows();

}  // namespace normserve::cpu
