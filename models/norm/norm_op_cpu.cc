#include "models/norm/norm_op_cpu.h"

#include <ATen/ATen.h>

namespace normserve::cpu {
namespace {

at::Tensor InverseRoot(const at::Tensor& s, const NormParams& p) {
  return p.eps_inside_sqrt ? at::rsqrt(s + p.eps) : at::reciprocal(at::sqrt(s) + p.eps);
}

}  // namespace

// Plain ATen composite in float32. Correct for every variant; the fast kernels replace it.
void NormForward(const at::Tensor& x, const NormParams& p, at::Tensor& y) {
  const at::Tensor h = x.to(at::kFloat);
  at::Tensor normalized;
  switch (p.statistic) {
    case RowStatistic::kNone:
      normalized = h;
      break;
    case RowStatistic::kMeanVariance: {
      const at::Tensor mean = h.mean(-1, /*keepdim=*/true);
      const at::Tensor centered = h - mean;
      normalized = centered * InverseRoot(centered.pow(2).mean(-1, true), p);
      break;
    }
    case RowStatistic::kMeanSquare: {
      const int64_t k = p.stat_channels == 0 ? h.size(-1) : p.stat_channels;
      normalized = h * InverseRoot(h.narrow(-1, 0, k).pow(2).mean(-1, true), p);
      break;
    }
    case RowStatistic::kGroupMeanSquare: {
      std::vector<int64_t> grouped(h.sizes().begin(), h.sizes().end() - 1);
      grouped.push_back(p.groups);
      grouped.push_back(h.size(-1) / p.groups);
      const at::Tensor g = h.reshape(grouped);
      normalized = (g * InverseRoot(g.pow(2).mean(-1, true), p)).reshape(h.sizes());
      break;
    }
  }
  at::Tensor out = normalized * p.scale;
  if (p.shift.defined()) out = out + p.shift;
  y.copy_(out);
}

}  // namespace normserve::cpu
