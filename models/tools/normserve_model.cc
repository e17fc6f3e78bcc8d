// normserve-model: writes model directories. `init` makes a complete one with random weights.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "models/errors.h"
#include "models/io/model_init.h"

namespace {

constexpr char kUsage[] =
    R"(usage: normserve-model init --config CONFIG.json --out DIR
                            [--source-text FILE] --target-text FILE
                            [--vocab-size N] [--seed N] [--dtype f32|f16|bf16]

Writes DIR/config.json, DIR/model.safetensors and the SentencePiece model(s), trained on the
given text files (one sentence per line): source.spm and target.spm for transformer_mt,
lm.spm for transformer_lm. CONFIG.json is a config.json without vocabulary sizes or
tokenizer names; those come from the trained tokenizers.
)";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw normserve::ModelLoadError(path + ": cannot open");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) != "init") {
    std::cerr << "normserve-model: unknown command '" << argv[1] << "'\n" << kUsage;
    return 2;
  }
  normserve::ModelInitOptions options;
  std::string config_path;
  try {
    for (int i = 2; i < argc; ++i) {
      const std::string flag = argv[i];
      if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
      const std::string value = argv[++i];
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
      else if (flag == "--dtype") {
        if (value == "f32")
          options.dtype = normserve::safetensors::DType::kF32;
        else if (value == "f16")
          options.dtype = normserve::safetensors::DType::kF16;
        else if (value == "bf16")
          options.dtype = normserve::safetensors::DType::kBF16;
        else
          throw std::invalid_argument("--dtype must be f32, f16 or bf16");
      } else {
        throw std::invalid_argument("unknown flag " + flag);
      }
    }
    if (config_path.empty() || options.out_dir.empty()) {
      throw std::invalid_argument("--config and --out are required");
    }
    options.config_json = ReadFile(config_path);
    normserve::InitModelDirectory(options);
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-model: " << e.what() << "\n\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "normserve-model: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << options.out_dir << "\n";
  return 0;
}
