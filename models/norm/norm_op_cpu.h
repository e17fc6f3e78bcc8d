// CPU side of the norm op (CTranslate2's layout: norm_op.cc checks and dispatches, this
// computes). The row kernels are in norm_cpu_rows_impl.h, built per ISA.
#pragma once

#include "models/norm/norm_kernels.h"

// Declared in norm_kernels.h, defined in norm_op_cpu.cc:
//   void normserve::cpu::RunNorm(const NormKernelArgs& args);
