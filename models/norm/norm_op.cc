#include "models/norm/norm_op.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "models/norm/norm_op_cpu.h"

namespace normserve {
namespace {

void CheckInputs(const at::Tensor& x, const NormParams& p) {
  TORCH_CHECK(x.dim() >= 1, "norm input must have at least one dimension");
  const int64_t d = x.size(-1);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "norm input dtype must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(p.scale.defined() && p.scale.numel() == d && p.scale.scalar_type() == at::kFloat,
              "norm scale must be a float32 vector of ", d, " channels");
  TORCH_CHECK(!p.shift.defined() || (p.shift.numel() == d && p.shift.scalar_type() == at::kFloat),
              "norm shift must be a float32 vector of ", d, " channels");
  TORCH_CHECK(p.scale.device() == x.device(), "norm scale is on ", p.scale.device(),
              " but the input is on ", x.device());
  if (p.statistic == RowStatistic::kMeanSquare) {
    TORCH_CHECK(p.stat_channels >= 0 && p.stat_channels <= d, "stat_channels ", p.stat_channels,
                " out of range for d = ", d);
  }
  if (p.statistic == RowStatistic::kGroupMeanSquare) {
    TORCH_CHECK(p.groups >= 1 && d % p.groups == 0, "PowerNorm groups (", p.groups,
                ") must divide the hidden size ", d);
  }
}

}  // namespace

at::Tensor NormForward(const at::Tensor& x, const NormParams& params) {
  CheckInputs(x, params);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  TORCH_CHECK(x.device().is_cpu(), "no norm kernel for device ", x.device());
  cpu::NormForward(x, params, y);
  return y;
}

at::Tensor NormForwardResidual(const at::Tensor& x, const at::Tensor& residual,
                               const NormParams& params) {
  TORCH_CHECK(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type(),
              "residual must match the input's shape and dtype");
  at::Tensor r = residual;  // shares storage: the in-place add updates the caller's tensor
  r.add_(x);
  return NormForward(residual, params);
}

}  // namespace normserve
