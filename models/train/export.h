// Writes what the trainer learnt as a model directory that ServedModel::Load and normserved
// load unchanged (DESIGN.md section 4), and checks it by loading it back.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "models/io/model_config.h"
#include "models/io/safetensors.h"
#include "models/train/data.h"

namespace normserve::train {

class TrainTransformer;

// Writes <dir>/model.safetensors (`tensors` converted to `dtype`) and then <dir>/config.json,
// each under a temporary name first. The tokenizer files the config names must be in `dir`
// already (the trainer puts them there before it trains).
void ExportModelDirectory(const std::string& dir, const ModelConfig& config,
                          const std::map<std::string, at::Tensor>& tensors,
                          safetensors::DType dtype);

// Loads `dir` with ServedModel::Load and scores the first `sentences` sentences of `corpus`
// with it and with `model`'s eval-mode forward (which must hold the exported weights);
// returns the largest absolute difference of a per-token log-probability.
double CompareWithServedModel(const std::string& dir, TrainTransformer& model, const Corpus& corpus,
                              int64_t sentences);

}  // namespace normserve::train
