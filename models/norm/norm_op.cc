#include "models/norm/norm_op.h"

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include "models/norm/norm_op_cpu.h"
#include "models/norm/norm_timing.h"

#if defined(NORMSERVE_TORCH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace normserve {
namespace {

NormDtype ToNormDtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return NormDtype::kFloat16;
    case at::kBFloat16:
      return NormDtype::kBFloat16;
    default:
      return NormDtype::kFloat32;
  }
}

void CheckInputs(const at::Tensor& x, const NormParams& p) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, "norm input must have at least one dimension");
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
  TORCH_CHECK(!p.shift.defined() || p.shift.device() == x.device(), "norm shift is on ",
              p.shift.device(), " but the input is on ", x.device());
  if (p.statistic == RowStatistic::kMeanSquare) {
    TORCH_CHECK(p.stat_channels >= 0 && p.stat_channels <= d, "stat_channels ", p.stat_channels,
                " out of range for d = ", d);
  }
  if (p.statistic == RowStatistic::kGroupMeanSquare) {
    TORCH_CHECK(p.groups >= 1 && d % p.groups == 0, "PowerNorm groups (", p.groups,
                ") must divide the hidden size ", d);
  }
}

void CheckLike(const at::Tensor& t, const at::Tensor& x, const char* what) {
  TORCH_CHECK(t.defined() && t.sizes() == x.sizes() && t.scalar_type() == x.scalar_type() &&
                  t.device() == x.device(),
              "norm ", what, " must match the input's shape, dtype and device");
}

// t seen as [rows, d] rows with one row stride and unit channel stride, if it can be.
bool RowView(const at::Tensor& t, int64_t* rows, int64_t* row_stride) {
  const int64_t d = t.size(-1);
  *rows = d == 0 ? 0 : t.numel() / d;
  *row_stride = d;
  if (t.numel() == 0) return true;
  if (d > 1 && t.stride(-1) != 1) return false;
  bool first = true;
  int64_t expected = 0;
  for (int64_t i = t.dim() - 2; i >= 0; --i) {
    if (t.size(i) == 1) continue;
    if (first) {
      *row_stride = t.stride(i);
      expected = t.stride(i) * t.size(i);
      first = false;
    } else {
      if (t.stride(i) != expected) return false;
      expected *= t.size(i);
    }
  }
  return true;
}

void Run(const at::Tensor& x_in, const at::Tensor* residual, const NormParams& p,
         const at::Tensor& y) {
  CheckInputs(x_in, p);
  CheckLike(y, x_in, "output");
  if (residual != nullptr) CheckLike(*residual, x_in, "residual");
  if (x_in.numel() == 0) return;

  NormKernelArgs a;
  at::Tensor x = x_in;
  if (!RowView(x, &a.rows, &a.x_stride)) {
    x = x.contiguous();
    RowView(x, &a.rows, &a.x_stride);
  }
  at::Tensor out = y;
  if (!RowView(out, &a.rows, &a.y_stride)) {
    out = at::empty(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
    RowView(out, &a.rows, &a.y_stride);
  }
  at::Tensor r;
  if (residual != nullptr) {
    r = *residual;
    if (!RowView(r, &a.rows, &a.residual_stride)) {
      r = r.contiguous();
      RowView(r, &a.rows, &a.residual_stride);
    }
    at::assert_no_overlap(out, r);
    at::assert_no_overlap(x, r);
    TORCH_CHECK(at::has_internal_overlap(r) != at::MemOverlap::Yes,
                "norm residual has overlapping rows");
  }
  at::assert_no_overlap(out, x);
  TORCH_CHECK(at::has_internal_overlap(out) != at::MemOverlap::Yes,
              "norm output has overlapping rows");

  const at::Tensor scale = p.scale.contiguous();
  const at::Tensor shift = p.shift.defined() ? p.shift.contiguous() : at::Tensor();
  a.x = x.data_ptr();
  a.residual = r.defined() ? r.data_ptr() : nullptr;
  a.y = out.data_ptr();
  a.d = x.size(-1);
  a.dtype = ToNormDtype(x.scalar_type());
  a.statistic = p.statistic;
  a.stat_channels = p.stat_channels;
  a.groups = p.groups;
  a.eps = p.eps;
  a.eps_inside_sqrt = p.eps_inside_sqrt;
  a.scale = scale.data_ptr<float>();
  a.shift = shift.defined() ? shift.data_ptr<float>() : nullptr;

  if (x.device().is_cpu()) {
    NormLaunchTimer timer(p.kind, NormDevice::kCpu, a.dtype, nullptr);
    cpu::RunNorm(a);
  } else if (x.device().is_cuda()) {
#if defined(NORMSERVE_TORCH_CUDA)
    const c10::cuda::CUDAGuard guard(x.device());
    void* stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    NormLaunchTimer timer(p.kind, NormDevice::kCuda, a.dtype, stream);
    cuda::RunNorm(a, stream);
#else
    TORCH_CHECK(false, "normserve was built without CUDA kernels or against a CPU LibTorch; ",
                "cannot normalize a tensor on ", x.device());
#endif
  } else {
    TORCH_CHECK(false, "no norm kernel for device ", x.device());
  }

  if (!out.is_same(y)) y.copy_(out);
  if (residual != nullptr && !r.is_same(*residual)) residual->copy_(r);
}

}  // namespace

void NormForwardInto(const at::Tensor& x, const NormParams& params, const at::Tensor& y) {
  Run(x, nullptr, params, y);
}

void NormForwardResidualInto(const at::Tensor& x, const at::Tensor& residual,
                             const NormParams& params, const at::Tensor& y) {
  Run(x, &residual, params, y);
}

at::Tensor NormForward(const at::Tensor& x, const NormParams& params) {
  CheckInputs(x, params);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Run(x, nullptr, params, y);
  return y;
}

at::Tensor NormForwardResidual(const at::Tensor& x, const at::Tensor& residual,
                               const NormParams& params) {
  CheckInputs(x, params);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  Run(x, &residual, params, y);
  return y;
}

}  // namespace normserve
