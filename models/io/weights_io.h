// safetensors files <-> named ATen tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "models/io/safetensors.h"

namespace normserve {

// Reads every tensor of a safetensors file as float32 (the CPU compute dtype).
std::map<std::string, at::Tensor> LoadWeights(const std::string& path);

// Writes the tensors converted to `dtype`.
void SaveWeights(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                 safetensors::DType dtype);

}  // namespace normserve
