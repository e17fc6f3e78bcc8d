// The CPU row kernels for any x86-64 (or other) CPU: norm_cpu_rows_impl.h at the baseline ISA.
#define NORMSERVE_CPU_ISA generic
#include "models/norm/norm_cpu_rows_impl.h"
