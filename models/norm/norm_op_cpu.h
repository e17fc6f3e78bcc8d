// CPU implementation behind NormForward; inputs are checked by the dispatcher.
#pragma once

#include "models/norm/norm_op.h"

namespace normserve::cpu {

void NormForward(const at::Tensor& x, const NormParams& params, at::Tensor& y);

}  // namespace normserve::cpu
