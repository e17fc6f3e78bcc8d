#include "models/io/model_init.h"

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/errors.h"
#include "models/io/model_config.h"
#include "models/io/weight_store.h"
#include "models/io/weights_io.h"
#include "models/text/tokenizer.h"
#include "models/transformer/transformer.h"

namespace normserve {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int TrainInto(const std::string& dir, const std::string& name, const std::string& text,
              int vocab_size) {
  if (text.empty()) throw ModelLoadError("no training text given for " + name);
  const std::string prefix = dir + "/" + name;
  TrainTokenizer({text, prefix, vocab_size});
  std::filesystem::rename(prefix + ".model", prefix + ".spm");
  std::filesystem::remove(prefix + ".vocab");
  return Tokenizer::Load(prefix + ".spm")->vocab_size();
}

}  // namespace

WeightStore RandomWeightStore(uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return WeightStore("random init", [generator](const std::string& name, at::IntArrayRef shape) {
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    if (EndsWith(name, "running_var") || EndsWith(name, "running_phi")) {
      return at::empty(shape, opts).uniform_(0.5, 1.5, generator);
    }
    if (EndsWith(name, "running_mean")) return at::empty(shape, opts).normal_(0, 0.1, generator);
    if (EndsWith(name, ".bias")) return at::empty(shape, opts).normal_(0, 0.02, generator);
    if (shape.size() == 1) return at::empty(shape, opts).normal_(1, 0.1, generator);
    if (EndsWith(name, "embed_tokens.weight")) {
      return at::empty(shape, opts)
          .normal_(0, 1 / std::sqrt(static_cast<double>(shape[1])), generator);
    }
    const double bound = std::sqrt(6.0 / static_cast<double>(shape[0] + shape[1]));
    return at::empty(shape, opts).uniform_(-bound, bound, generator);
  });
}

void InitModelDirectory(const ModelInitOptions& o) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(o.config_json);
  } catch (const nlohmann::json::exception& e) {
    throw ModelLoadError(std::string("config is not valid JSON: ") + e.what());
  }
  std::filesystem::create_directories(o.out_dir);
  if (config.value("architecture", "") == "transformer_mt") {
    config["source_vocab_size"] = TrainInto(o.out_dir, "source", o.source_text, o.vocab_size);
    config["target_vocab_size"] = TrainInto(o.out_dir, "target", o.target_text, o.vocab_size);
    config["tokenizer"] = {{"source", "source.spm"}, {"target", "target.spm"}};
  } else {
    config["vocab_size"] = TrainInto(o.out_dir, "lm", o.target_text, o.vocab_size);
    config["tokenizer"] = {{"model", "lm.spm"}};
  }
  const std::string config_path = o.out_dir + "/config.json";
  const ModelConfig parsed = ParseModelConfig(config.dump(), config_path);

  WeightStore store = RandomWeightStore(o.seed);
  Transformer model(parsed, store);
  SaveWeights(o.out_dir + "/model.safetensors", store.tensors(), o.dtype);
  std::ofstream(config_path) << ModelConfigToJson(parsed);
}

}  // namespace normserve
