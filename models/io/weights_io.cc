#include "models/io/weights_io.h"

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "models/errors.h"

namespace normserve {
namespace {

at::ScalarType ToScalarType(safetensors::DType dtype) {
  switch (dtype) {
    case safetensors::DType::kF32:
      return at::kFloat;
    case safetensors::DType::kF16:
      return at::kHalf;
    case safetensors::DType::kBF16:
      return at::kBFloat16;
  }
  return at::kFloat;
}

}  // namespace

std::map<std::string, at::Tensor> LoadWeights(const std::string& path, safetensors::DType* stored) {
  const safetensors::File file = safetensors::File::Open(path);
  std::map<std::string, at::Tensor> out;
  std::optional<safetensors::DType> dtype;
  for (const auto& [name, view] : file.tensors()) {
    dtype = dtype && *dtype != view.dtype ? safetensors::DType::kF32 : view.dtype;
    // from_blob over the file's bytes, then an owning float32 copy: the bytes can go.
    const at::Tensor mapped = at::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                                            at::TensorOptions().dtype(ToScalarType(view.dtype)));
    out[name] = mapped.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  if (stored) *stored = dtype.value_or(safetensors::DType::kF32);
  return out;
}

void RequireFiniteWeights(const std::map<std::string, at::Tensor>& tensors,
                          const std::string& source) {
  for (const auto& [name, t] : tensors) {
    const int64_t non_finite = t.numel() - at::isfinite(t).sum().item<int64_t>();
    if (non_finite > 0) {
      throw ModelLoadError(source + ": tensor '" + name + "' holds " + std::to_string(non_finite) +
                           " non-finite values (NaN or Inf) among " + std::to_string(t.numel()) +
                           "; the file is corrupt or its training diverged");
    }
  }
}

void SaveWeights(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                 safetensors::DType dtype) {
  std::map<std::string, at::Tensor> converted;
  std::map<std::string, safetensors::TensorToWrite> views;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.to(at::kCPU).to(ToScalarType(dtype)).contiguous();
    converted[name] = c;
    views[name] = {dtype, std::vector<int64_t>(c.sizes().begin(), c.sizes().end()), c.data_ptr(),
                   static_cast<size_t>(c.nbytes())};
  }
  safetensors::Write(path, views, {{"format", "pt"}});
}

}  // namespace normserve
