// safetensors files <-> named ATen tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "models/io/safetensors.h"

namespace normserve {

// Reads every tensor of a safetensors file as float32 (the CPU compute dtype). With
// `stored`, also says the dtype the file stores them in (F32 when they differ), which the
// tools that rewrite a model keep by default.
std::map<std::string, at::Tensor> LoadWeights(const std::string& path,
                                              safetensors::DType* stored = nullptr);

// Throws ModelLoadError naming `source`, the first tensor that holds NaN or Inf values and
// their count: such weights turn every output into NaN, which no request can be served from.
void RequireFiniteWeights(const std::map<std::string, at::Tensor>& tensors,
                          const std::string& source);

// Writes the tensors converted to `dtype`.
void SaveWeights(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                 safetensors::DType dtype);

}  // namespace normserve
