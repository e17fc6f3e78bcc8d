#include "models/io/weights_io.h"

#include <ATen/ATen.h>

#include <vector>

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

std::map<std::string, at::Tensor> LoadWeights(const std::string& path) {
  const safetensors::File file = safetensors::File::Open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, view] : file.tensors()) {
    // from_blob over the mapping, then an owning float32 copy: the mapping can go.
    const at::Tensor mapped = at::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                                            at::TensorOptions().dtype(ToScalarType(view.dtype)));
    out[name] = mapped.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  }
  return out;
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
