// normserve-model: writes model directories. `init` makes a complete one with random weights;
// `convert` writes a Pre-LN model's lossless Pre-RMSNorm or Pre-CRMSNorm equivalent; `import`
// turns a Hugging Face model directory into one.
#include <CLI/CLI.hpp>
#include <iostream>
#include <optional>
#include <string>

#include "common/command_line.h"
#include "models/errors.h"
#include "models/io/hf_import.h"
#include "models/io/model_init.h"
#include "models/io/norm_conversion.h"
#include "models/io/text_file.h"

namespace {

constexpr char kDescription[] =
    R"(Writes model directories.

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

import writes the normserve version directory of a Hugging Face model directory:
model_type marian (opus-mt) or llama/mistral, with model.safetensors or its shards and
model.safetensors.index.json, and the tokenizer files (marian: source.spm, target.spm,
vocab.json; llama: tokenizer.model). Weights keep the checkpoint's dtype unless --dtype says
otherwise. What the server would compute differently from the reference is refused, naming
the field. Pickled checkpoints (pytorch_model.bin) are refused: loading them runs code.)";

constexpr char kFooter[] =
    R"(`normserve-model COMMAND --help` lists a command's flags. Every flag can also come from its
environment variable (shown as env); a flag wins.
Exit codes: 0 written, 1 refused or failed, 2 usage error.)";

normserve::safetensors::DType ParseDType(const std::string& value) {
  if (value == "f16") return normserve::safetensors::DType::kF16;
  if (value == "bf16") return normserve::safetensors::DType::kBF16;
  return normserve::safetensors::DType::kF32;
}

// --dtype of both commands, checked while parsing.
CLI::Option* AddDTypeOption(CLI::App* command, std::string* dtype, const std::string& what) {
  return command->add_option("--dtype", *dtype, what)
      ->type_name("DTYPE")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
}

struct Commands {
  normserve::ModelInitOptions init;
  std::string config_path;
  std::string init_dtype = "f32";
  std::string norm, input, output, convert_dtype;
  std::string import_from, import_out, import_dtype;
};

void AddInit(CLI::App* app, Commands* c) {
  CLI::App* init = app->add_subcommand(
      "init", "a complete model directory with random weights and trained tokenizers");
  init->add_option("--config", c->config_path, "the architecture and norms")
      ->type_name("CONFIG.json")
      ->required();
  init->add_option("--out", c->init.out_dir, "the model directory to write")
      ->type_name("DIR")
      ->required();
  init->add_option("--source-text", c->init.source_text,
                   "transformer_mt: the source sentences, one a line")
      ->type_name("FILE");
  init->add_option("--target-text", c->init.target_text,
                   "the target sentences (transformer_lm: the texts), one a line")
      ->type_name("FILE")
      ->required();
  init->add_option("--vocab-size", c->init.vocab_size, "SentencePiece pieces per tokenizer")
      ->type_name("N")
      ->check(normserve::command_line::NumberIn(2, 1 << 20));
  init->add_option("--seed", c->init.seed, "seed of the random weights")->type_name("N");
  AddDTypeOption(init, &c->init_dtype, "dtype of the weights");
  normserve::command_line::AddEnvironmentFallbacks("normserve-model", init);
}

void AddConvert(CLI::App* app, Commands* c) {
  CLI::App* convert = app->add_subcommand(
      "convert", "the lossless Pre-RMSNorm or Pre-CRMSNorm equivalent of a Pre-LN model");
  convert->add_option("--norm", c->norm, "the norm to convert to: rmsnorm or crmsnorm")
      ->type_name("NORM")
      ->required();
  convert->add_option("--input", c->input, "the Pre-LN model's version directory")
      ->type_name("DIR")
      ->required();
  convert->add_option("--output", c->output, "the directory to write")
      ->type_name("DIR")
      ->required();
  AddDTypeOption(convert, &c->convert_dtype, "dtype of the weights (default: the input's)");
  normserve::command_line::AddEnvironmentFallbacks("normserve-model", convert);
}

void AddImport(CLI::App* app, Commands* c) {
  CLI::App* import = app->add_subcommand(
      "import", "a normserve model directory from a Hugging Face one (marian, llama, mistral)");
  import->add_option("--from", c->import_from, "the Hugging Face model directory")
      ->type_name("DIR")
      ->required();
  import->add_option("--out", c->import_out, "the version directory to write")
      ->type_name("DIR")
      ->required();
  AddDTypeOption(import, &c->import_dtype, "dtype of the weights (default: the checkpoint's)");
  normserve::command_line::AddEnvironmentFallbacks("normserve-model", import);
}

std::string Import(const Commands& c) {
  std::optional<normserve::safetensors::DType> dtype;
  if (!c.import_dtype.empty()) dtype = ParseDType(c.import_dtype);
  const normserve::ImportSummary summary =
      normserve::ImportHuggingFaceModel(c.import_from, c.import_out, dtype);
  std::cout << "imported " << summary.model_type << ": " << summary.parameters
            << " parameters, norms " << summary.norm_label << "\n";
  return c.import_out;
}

std::string Init(Commands* c) {
  c->init.config_json = normserve::ReadTextFile(c->config_path);
  c->init.dtype = ParseDType(c->init_dtype);
  normserve::InitModelDirectory(c->init);
  return c->init.out_dir;
}

std::string Convert(const Commands& c) {
  std::optional<normserve::safetensors::DType> dtype;
  if (!c.convert_dtype.empty()) dtype = ParseDType(c.convert_dtype);
  normserve::ConvertModelDirectory(c.input, c.output, normserve::ParseNormConversionTarget(c.norm),
                                   dtype);
  return c.output;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(kDescription, "normserve-model");
  normserve::command_line::Configure(&app);
  app.footer(kFooter);
  app.require_subcommand(1);
  Commands commands;
  AddInit(&app, &commands);
  AddConvert(&app, &commands);
  AddImport(&app, &commands);
  if (const auto exit_status = normserve::command_line::Parse(&app, argc, argv)) {
    return *exit_status;
  }
  std::string written;
  try {
    if (app.got_subcommand("init")) {
      written = Init(&commands);
    } else if (app.got_subcommand("convert")) {
      written = Convert(commands);
    } else {
      written = Import(commands);
    }
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-model: " << e.what() << "\n";
    return normserve::command_line::kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "normserve-model: " << e.what() << "\n";
    return 1;
  }
  std::cout << "wrote " << written << "\n";
  return 0;
}
