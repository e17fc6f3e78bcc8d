// Writes a complete, servable model directory with random weights: config.json, the
// SentencePiece model(s) trained on given text, and model.safetensors. Tests, demos and
// `normserve-model init` use it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "models/io/safetensors.h"

namespace normserve {

class WeightStore;

struct ModelInitOptions {
  std::string config_json;  // config.json text; vocab sizes and tokenizer names are filled in
  std::string out_dir;      // created if missing
  std::string source_text;  // transformer_mt: trains source.spm
  std::string target_text;  // trains target.spm (transformer_mt) or lm.spm (transformer_lm)
  int vocab_size = 1000;    // per tokenizer; SentencePiece may settle on fewer for tiny texts
  uint64_t seed = 1;
  safetensors::DType dtype = safetensors::DType::kF32;
};

void InitModelDirectory(const ModelInitOptions& options);

// A store that invents weights as a model asks for them: Xavier-uniform matrices, fairseq's
// N(0, d^-1/2) embeddings, norm gains near 1 and positive running statistics.
WeightStore RandomWeightStore(uint64_t seed);

}  // namespace normserve
