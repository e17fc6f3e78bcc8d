// model_logits: what a served model computes, for the parity tests against reference
// implementations (tests/parity): the logits of given token ids, and the token ids of texts.
//
//   model_logits logits --model VERSION_DIR --input IN.json --output OUT.f32
//     IN.json: {"items": [{"source": [ids], "decoder_input": [ids]}, ...]} ("source" only for
//     transformer_mt, without </s>: appended here as the server does). Writes each item's
//     logits [len(decoder_input), V] as float32 little-endian, items one after another.
//   model_logits tokenize --model VERSION_DIR --side source|target --texts FILE
//     One JSON list of ids per line of FILE, as the server tokenizes that side (no start
//     token, no </s>); an empty line gives [].
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/command_line.h"
#include "models/decoding/search.h"
#include "models/served_model.h"
#include "models/transformer/transformer.h"

namespace normserve {
namespace {

constexpr char kDescription[] =
    R"(model_logits: logits and token ids of a normserve model version, for parity tests.)";

struct Options {
  std::string model, input, output, side = "target", texts;
};

std::shared_ptr<const ServedModel> LoadModel(const std::string& dir) {
  return ServedModel::Load(dir, "parity", 1, "cpu");
}

std::vector<int64_t> Ids(const nlohmann::json& item, const char* field, size_t index) {
  const auto it = item.find(field);
  if (it == item.end() || !it->is_array()) {
    throw std::invalid_argument("items[" + std::to_string(index) + "]." + field +
                                " must be a list of token ids");
  }
  return it->get<std::vector<int64_t>>();
}

void WriteLogits(const Options& o) {
  static_assert(sizeof(float) == 4);
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) != 1) {
    throw std::runtime_error("this tool writes the host's floats and needs a little-endian host");
  }
  std::ifstream in(o.input);
  if (!in) throw std::invalid_argument(o.input + ": cannot open");
  const nlohmann::json request = nlohmann::json::parse(in);
  const auto model = LoadModel(o.model);
  const Transformer& transformer = model->transformer();
  const ModelConfig& config = model->config();
  std::ofstream out(o.output, std::ios::binary);
  if (!out) throw std::invalid_argument(o.output + ": cannot write");
  c10::InferenceMode guard;
  const auto& items = request.at("items");
  for (size_t i = 0; i < items.size(); ++i) {
    const std::vector<int64_t> decoder_input = Ids(items[i], "decoder_input", i);
    EncoderOutput memory;
    if (config.is_mt()) {
      std::vector<int64_t> source = Ids(items[i], "source", i);
      source.push_back(config.special.eos);  // as ServedModel does before encoding
      memory = transformer.Encode(PadBatch({source}, config.special.pad, transformer.device()));
    }
    DecoderState state = transformer.StartDecoding(memory, 1);
    const at::Tensor logits =
        transformer
            .Decode(PadBatch({decoder_input}, config.special.pad, transformer.device()), state)
            .to(at::kFloat)
            .cpu()
            .contiguous();
    out.write(reinterpret_cast<const char*>(logits.data_ptr<float>()),
              static_cast<std::streamsize>(logits.numel() * sizeof(float)));
  }
  if (!out.flush()) throw std::runtime_error(o.output + ": write failed");
}

void PrintTokens(const Options& o) {
  std::ifstream in(o.texts);
  if (!in) throw std::invalid_argument(o.texts + ": cannot open");
  const auto model = LoadModel(o.model);
  const bool mt = model->config().is_mt();
  if (o.side == "source" && !mt) {
    throw std::invalid_argument("--side source needs a transformer_mt model");
  }
  std::string line;
  while (std::getline(in, line)) {
    std::vector<int64_t> ids;
    if (!line.empty()) {
      if (o.side == "source") {
        ids = model->PrepareTranslate({line}, TranslationOptions{}).front();
      } else if (mt) {
        ids = model->PrepareScorePairs({{line, line}}).second.front();
      } else {
        ids = model->PrepareScoreTexts({line}).front();
      }
    }
    std::cout << nlohmann::json(ids).dump() << "\n";
  }
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  CLI::App app(normserve::kDescription, "model_logits");
  normserve::command_line::Configure(&app);
  app.require_subcommand(1);
  normserve::Options o;
  CLI::App* logits = app.add_subcommand("logits", "logits of each item's decoder input");
  logits->add_option("--model", o.model, "the model version directory")->required();
  logits->add_option("--input", o.input, "the items (JSON)")->required();
  logits->add_option("--output", o.output, "the float32 logits to write")->required();
  CLI::App* tokenize = app.add_subcommand("tokenize", "token ids of texts, one per line");
  tokenize->add_option("--model", o.model, "the model version directory")->required();
  tokenize->add_option("--side", o.side, "which tokenizer")
      ->check(CLI::IsMember({"source", "target"}));
  tokenize->add_option("--texts", o.texts, "the texts, one per line")->required();
  if (const auto exit_status = normserve::command_line::Parse(&app, argc, argv)) {
    return *exit_status;
  }
  try {
    if (app.got_subcommand("logits")) {
      normserve::WriteLogits(o);
    } else {
      normserve::PrintTokens(o);
    }
  } catch (const std::exception& e) {
    std::cerr << "model_logits: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
