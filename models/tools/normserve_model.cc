// normserve-model: writes model directories. `init` makes a complete one with random weights;
// `convert` writes a Pre-LN model's lossless Pre-RMSNorm or Pre-CRMSNorm equivalent.
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

#include "models/errors.h"
#include "models/io/model_init.h"
#include "models/io/norm_conversion.h"

namespace {

constexpr char kUsage[] =
    R"(usage: normserve-model init --config CONFIG.json --out DIR
                            [--source-text FILE] --target-text FILE
                            [--vocab-size N] [--seed N] [--dtype f32|f16|bf16]
       normserve-model convert --norm rmsnorm|crmsnorm --input DIR --output DIR
                               [--dtype f32|f16|bf16]

init writes DIR/config.json, DIR/model.safetensors and the SentencePiece model(s), trained on
the given text files (one sentence per line): source.spm and target.spm for transformer_mt,
lm.spm for transformer_lm. CONFIG.json is a config.json without vocabulary sizes or
tokenizer names; those come from the trained tokenizers.

convert writes the Pre-RMSNorm (or Pre-CRMSNorm) equivalent of the Pre-LN model in the input
version directory (normalize_before true, layernorm at every site) to the output directory:
same outputs, RMSNorm at every site, recentred weights, the tied output projection untied;
crmsnorm also stores the zero-mean residual stream in embed_dim - 1 channels. Weights are
written in the input's dtype unless --dtype says otherwise; only f32 keeps the recentring
exact (f16 rounds it again: logits then differ by about 1e-3). Other models are refused with
the reason.
Exit codes: 0 written, 1 refused or failed, 2 usage error.
)";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw normserve::ModelLoadError(path + ": cannot open");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

normserve::safetensors::DType ParseDType(const std::string& value) {
  if (value == "f32") return normserve::safetensors::DType::kF32;
  if (value == "f16") return normserve::safetensors::DType::kF16;
  if (value == "bf16") return normserve::safetensors::DType::kBF16;
  throw std::invalid_argument("--dtype must be f32, f16 or bf16");
}

// Calls `take(flag, value)` for each "--flag value" pair after the command; throws
// std::invalid_argument for a flag without a value.
void ForEachFlag(int argc, char** argv,
                 const std::function<void(const std::string&, const std::string&)>& take) {
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    take(flag, argv[++i]);
  }
}

std::string Init(int argc, char** argv) {
  normserve::ModelInitOptions options;
  std::string config_path;
  ForEachFlag(argc, argv, [&](const std::string& flag, const std::string& value) {
    if (flag == "--config")
      config_path = value;
    else if (flag == "--out")
      options.out_dir = value;
    else if (flag == "--source-text")
      options.source_text = value;
    else if (flag == "--target-text")
      options.target_text = value;
    else if (flag == "--vocab-size")
      options.vocab_size = std::stoi(value);
    else if (flag == "--seed")
      options.seed = std::stoull(value);
    else if (flag == "--dtype")
      options.dtype = ParseDType(value);
    else {
      throw std::invalid_argument("unknown flag " + flag);
    }
  });
  if (config_path.empty() || options.out_dir.empty()) {
    throw std::invalid_argument("--config and --out are required");
  }
  options.config_json = ReadFile(config_path);
  normserve::InitModelDirectory(options);
  return options.out_dir;
}

std::string Convert(int argc, char** argv) {
  std::string norm, input, output;
  std::optional<normserve::safetensors::DType> dtype;
  ForEachFlag(argc, argv, [&](const std::string& flag, const std::string& value) {
    if (flag == "--norm")
      norm = value;
    else if (flag == "--input")
      input = value;
    else if (flag == "--output")
      output = value;
    else if (flag == "--dtype")
      dtype = ParseDType(value);
    else
      throw std::invalid_argument("unknown flag " + flag);
  });
  if (norm.empty() || input.empty() || output.empty()) {
    throw std::invalid_argument("--norm, --input and --output are required");
  }
  normserve::ConvertModelDirectory(input, output, normserve::ParseNormConversionTarget(norm),
                                   dtype);
  return output;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command != "init" && command != "convert") {
    std::cerr << "normserve-model: unknown command '" << command << "'\n" << kUsage;
    return 2;
  }
  std::string written;
  try {
    written = command == "init" ? Init(argc, argv) : Convert(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-model: " << e.what() << "\n\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "normserve-model: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << written << "\n";
  return 0;
}
