#include "models/io/hf_import.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "models/errors.h"
#include "models/io/confined_path.h"
#include "models/io/model_config.h"
#include "models/io/text_file.h"
#include "models/io/weights_io.h"
#include "models/served_model.h"
#include "models/text/tokenizer.h"
#include "models/transformer/embedding.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The fields of a Hugging Face config.json, each read with its type checked.
class HfConfig {
 public:
  explicit HfConfig(const std::string& path) : path_(path), root_(ReadJsonFile(path)) {
    if (!root_.is_object()) throw ModelLoadError(path + ": must be a JSON object");
  }

  [[noreturn]] void Refuse(const std::string& field, const std::string& problem) const {
    throw ModelLoadError(path_ + ": '" + field + "' " + problem);
  }
  bool Has(const std::string& field) const {
    return root_.contains(field) && !root_[field].is_null();
  }
  int64_t Int(const std::string& field) const {
    if (!Has(field)) Refuse(field, "is missing");
    const json& v = root_[field];
    if (!v.is_number_integer()) Refuse(field, "must be an integer, got " + v.dump());
    return v.get<int64_t>();
  }
  int64_t Int(const std::string& field, int64_t fallback) const {
    return Has(field) ? Int(field) : fallback;
  }
  double Number(const std::string& field, double fallback) const {
    if (!Has(field)) return fallback;
    if (!root_[field].is_number()) Refuse(field, "must be a number, got " + root_[field].dump());
    return root_[field].get<double>();
  }
  bool Bool(const std::string& field, bool fallback) const {
    if (!Has(field)) return fallback;
    if (!root_[field].is_boolean()) Refuse(field, "must be true or false");
    return root_[field].get<bool>();
  }
  std::string String(const std::string& field, const std::string& fallback) const {
    if (!Has(field)) return fallback;
    if (!root_[field].is_string()) Refuse(field, "must be a string");
    return root_[field].get<std::string>();
  }
  // A field that changes the computation in a way normserve does not follow must be absent,
  // null or `neutral`.
  void RequireNeutral(const std::string& field, const json& neutral, const std::string& why) const {
    if (Has(field) && root_[field] != neutral) {
      Refuse(field, "is " + root_[field].dump() + "; " + why);
    }
  }

 private:
  std::string path_;
  json root_;
};

// The checkpoint's tensors: model.safetensors, or the shards its index names.
std::map<std::string, at::Tensor> ReadCheckpoint(const std::string& dir,
                                                 safetensors::DType* stored) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(single)) {
    files.push_back("model.safetensors");
  } else if (fs::exists(index)) {
    const json root = ReadJsonFile(index.string());
    if (!root.contains("weight_map") || !root["weight_map"].is_object()) {
      throw ModelLoadError(index.string() + ": has no \"weight_map\" object");
    }
    std::set<std::string> shards;
    for (const auto& [name, file] : root["weight_map"].items()) {
      if (!file.is_string())
        throw ModelLoadError(index.string() + ": the file of " + name + " is not a string");
      shards.insert(file.get<std::string>());
    }
    files.assign(shards.begin(), shards.end());
  } else if (fs::exists(fs::path(dir) / "pytorch_model.bin")) {
    throw ModelLoadError(dir +
                         ": holds pickled weights (pytorch_model.bin), which run code when "
                         "loaded; save the model with safetensors (save_pretrained(..., "
                         "safe_serialization=True)) and import that");
  } else {
    throw ModelLoadError(dir + ": has neither model.safetensors nor model.safetensors.index.json");
  }
  std::map<std::string, at::Tensor> tensors;
  for (const std::string& file : files) {
    const std::string path = ConfinedFile(dir, file);  // an index naming ../x is refused
    for (auto& [name, tensor] : LoadWeights(path, stored)) {
      if (!tensors.emplace(name, std::move(tensor)).second) {
        throw ModelLoadError(path + ": tensor " + name + " is also in another shard");
      }
    }
  }
  return tensors;
}

// Moves checkpoint tensors to their normserve names; what is neither moved nor dropped is an
// error, so that no weight of the checkpoint is silently ignored.
class Renaming {
 public:
  Renaming(std::map<std::string, at::Tensor> from, std::string source)
      : from_(std::move(from)), source_(std::move(source)) {}

  bool Has(const std::string& name) const { return from_.count(name) > 0; }
  const at::Tensor& Peek(const std::string& name) const {
    const auto it = from_.find(name);
    if (it == from_.end()) throw ModelLoadError(source_ + ": has no tensor " + name);
    return it->second;
  }
  void Move(const std::string& name, const std::string& to) {
    at::Tensor t = Peek(name);
    from_.erase(name);
    to_[to] = std::move(t);
  }
  void Put(const std::string& to, at::Tensor t) { to_[to] = std::move(t); }
  void DropIfPresent(const std::string& name) { from_.erase(name); }
  std::map<std::string, at::Tensor> Finish() {
    if (!from_.empty()) {
      throw ModelLoadError(source_ + ": tensor " + from_.begin()->first +
                           " has no place in the imported model (" + std::to_string(from_.size()) +
                           " such tensors)");
    }
    return std::move(to_);
  }

 private:
  std::map<std::string, at::Tensor> from_, to_;
  std::string source_;
};

NormConfig LayerNorm(double eps) {
  NormConfig n;
  n.kind = NormKind::kLayerNorm;
  n.eps = eps;
  return n;
}

// The id of a piece of a SentencePiece model, or -1.
int64_t PieceId(const std::string& spm_path, const std::string& piece) {
  const auto tokenizer = Tokenizer::Load(spm_path);
  for (int id = 0; id < tokenizer->vocab_size(); ++id) {
    if (tokenizer->Piece(id) == piece) return id;
  }
  return -1;
}

struct Imported {
  ModelConfig config;
  std::map<std::string, at::Tensor> weights;
  std::vector<std::string> files;  // tokenizer files to copy
};

Imported ImportLlama(const HfConfig& hf, const std::string& dir, Renaming& ckpt) {
  hf.RequireNeutral("hidden_act", "silu", "Llama's SwiGLU uses silu, the only activation imported");
  hf.RequireNeutral("rope_scaling", json(), "scaled rotary positions are not supported");
  hf.RequireNeutral("attention_bias", false, "projections with biases are not supported");
  hf.RequireNeutral("mlp_bias", false, "projections with biases are not supported");
  const std::string spm = ConfinedFile(dir, "tokenizer.model");
  if (!fs::exists(spm)) {
    throw ModelLoadError(dir +
                         ": has no tokenizer.model; only SentencePiece tokenizers are "
                         "imported (a tokenizer.json alone, e.g. Llama 3's, is not)");
  }
  Imported out;
  ModelConfig& c = out.config;
  c.architecture = Architecture::kTransformerLM;
  c.embed_dim = hf.Int("hidden_size");
  c.ffn_dim = hf.Int("intermediate_size");
  c.attention_heads = hf.Int("num_attention_heads");
  c.kv_heads = hf.Int("num_key_value_heads", c.attention_heads);
  c.decoder_layers = hf.Int("num_hidden_layers");
  if (c.attention_heads < 1 || c.embed_dim % c.attention_heads != 0) {
    hf.Refuse("num_attention_heads", "must divide hidden_size");
  }
  if (hf.Has("head_dim") && hf.Int("head_dim") != c.embed_dim / c.attention_heads) {
    hf.Refuse("head_dim", "differs from hidden_size / num_attention_heads, which is not supported");
  }
  c.normalize_before = true;
  c.activation = Activation::kSwiGLU;
  c.positions = PositionEncoding::kRotary;
  c.rope_theta = hf.Number("rope_theta", 10000.0);
  c.scale_embedding = false;
  c.linear_bias = false;
  c.max_positions = hf.Int("max_position_embeddings", 2048);
  // Mistral's sliding window changes nothing for sequences no longer than it: serving up to
  // the window keeps the outputs exact.
  if (hf.Has("sliding_window"))
    c.max_positions = std::min(c.max_positions, hf.Int("sliding_window"));
  c.target_vocab_size = hf.Int("vocab_size");
  c.share_decoder_input_output_embed = hf.Bool("tie_word_embeddings", false);
  c.target_tokenizer = {"tokenizer.model", ""};
  c.special.bos = hf.Int("bos_token_id", 1);
  c.special.eos = hf.Int("eos_token_id", 2);
  c.special.pad = hf.Int("pad_token_id", SpecialTokens::kNone);
  c.special.unk = PieceId(spm, "<unk>");
  if (c.special.unk < 0) throw ModelLoadError(spm + ": has no <unk> piece");
  c.special.decoder_start = c.special.bos;  // LlamaTokenizer starts every text with <s>
  NormConfig rms;
  rms.kind = NormKind::kRMSNorm;
  rms.bias = false;
  rms.eps = hf.Number("rms_norm_eps", 1e-6);
  for (NormSite s : c.sites()) c.norms[s] = rms;

  ckpt.Move("model.embed_tokens.weight", "decoder.embed_tokens.weight");
  for (int64_t i = 0; i < c.decoder_layers; ++i) {
    const std::string from = "model.layers." + std::to_string(i) + ".";
    const std::string to = "decoder.layers." + std::to_string(i) + ".";
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
      ckpt.Move(from + "self_attn." + p + ".weight", to + "self_attn." + p + ".weight");
    }
    ckpt.Move(from + "self_attn.o_proj.weight", to + "self_attn.out_proj.weight");
    ckpt.DropIfPresent(from + "self_attn.rotary_emb.inv_freq");  // older saves keep it
    ckpt.Move(from + "mlp.gate_proj.weight", to + "fc_gate.weight");
    ckpt.Move(from + "mlp.up_proj.weight", to + "fc1.weight");
    ckpt.Move(from + "mlp.down_proj.weight", to + "fc2.weight");
    ckpt.Move(from + "input_layernorm.weight", to + "self_attn_layer_norm.weight");
    ckpt.Move(from + "post_attention_layernorm.weight", to + "final_layer_norm.weight");
  }
  ckpt.Move("model.norm.weight", "decoder.layer_norm.weight");
  if (c.share_decoder_input_output_embed) {
    ckpt.DropIfPresent("lm_head.weight");  // the same table, when saved at all
  } else {
    ckpt.Move("lm_head.weight", "decoder.output_projection.weight");
  }
  out.files = {"tokenizer.model"};
  return out;
}

Imported ImportMarian(const HfConfig& hf, const std::string& dir, Renaming& ckpt) {
  const int64_t heads = hf.Int("encoder_attention_heads");
  if (hf.Int("decoder_attention_heads", heads) != heads) {
    hf.Refuse("decoder_attention_heads", "differs from encoder_attention_heads (not supported)");
  }
  const int64_t ffn = hf.Int("encoder_ffn_dim");
  if (hf.Int("decoder_ffn_dim", ffn) != ffn) {
    hf.Refuse("decoder_ffn_dim", "differs from encoder_ffn_dim (not supported)");
  }
  hf.RequireNeutral("normalize_before", false, "Marian models are post-norm");
  hf.RequireNeutral("static_position_embeddings", true, "only Marian's sinusoids are imported");
  Imported out;
  ModelConfig& c = out.config;
  c.architecture = Architecture::kTransformerMT;
  c.embed_dim = hf.Int("d_model");
  c.ffn_dim = ffn;
  c.attention_heads = heads;
  c.encoder_layers = hf.Int("encoder_layers");
  c.decoder_layers = hf.Int("decoder_layers");
  c.normalize_before = false;
  const std::string activation = hf.String("activation_function", "swish");
  if (activation == "swish" || activation == "silu") {
    c.activation = Activation::kSiLU;
  } else if (activation == "relu") {
    c.activation = Activation::kReLU;
  } else if (activation == "gelu") {
    c.activation = Activation::kGELU;
  } else {
    hf.Refuse("activation_function", "is '" + activation + "'; swish, silu, relu and gelu import");
  }
  c.positions = PositionEncoding::kMarianSinusoidal;
  c.scale_embedding = hf.Bool("scale_embedding", false);
  c.max_positions = hf.Int("max_position_embeddings", 512);
  const bool shared = hf.Bool("share_encoder_decoder_embeddings", true);
  c.share_all_embeddings = shared;
  c.share_decoder_input_output_embed = hf.Bool("tie_word_embeddings", true);
  c.source_vocab_size = hf.Int("vocab_size");
  c.target_vocab_size =
      shared ? c.source_vocab_size : hf.Int("decoder_vocab_size", c.source_vocab_size);
  const std::string target_vocab = shared ? "vocab.json" : "target_vocab.json";
  c.source_tokenizer = {"source.spm", "vocab.json"};
  c.target_tokenizer = {"target.spm", target_vocab};
  c.language_tags = true;  // MarianTokenizer cuts >>xx<< tags from every text
  c.special.eos = hf.Int("eos_token_id", 0);
  c.special.bos = c.special.eos;  // Marian has no <s>
  c.special.pad = hf.Int("pad_token_id");
  c.special.decoder_start = hf.Int("decoder_start_token_id", c.special.pad);
  const json vocab = ReadJsonFile(ConfinedFile(dir, "vocab.json"));
  if (!vocab.is_object() || !vocab.contains("<unk>") || !vocab["<unk>"].is_number_integer()) {
    throw ModelLoadError(dir + "/vocab.json: has no \"<unk>\" id");
  }
  c.special.unk = vocab["<unk>"].get<int64_t>();
  for (NormSite s : c.sites()) c.norms[s] = LayerNorm(1e-5);  // torch.nn.LayerNorm's eps

  // Marian's tensors carry fairseq's names under "model."; the embeddings and the output
  // layer are the tied ones.
  const auto strip = [&](const std::string& prefix) {
    std::vector<std::string> names;
    for (int64_t i = 0; i < (prefix == "encoder" ? c.encoder_layers : c.decoder_layers); ++i) {
      const std::string layer = prefix + ".layers." + std::to_string(i) + ".";
      std::vector<std::string> parts = {"self_attn", "fc1", "fc2", "self_attn_layer_norm",
                                        "final_layer_norm"};
      if (prefix == "decoder") {
        parts.push_back("encoder_attn");
        parts.push_back("encoder_attn_layer_norm");
      }
      for (const std::string& part : parts) {
        const bool attention = part == "self_attn" || part == "encoder_attn";
        const std::vector<std::string> projections =
            attention ? std::vector<std::string>{".q_proj", ".k_proj", ".v_proj", ".out_proj"}
                      : std::vector<std::string>{""};
        for (const std::string& projection : projections) {
          for (const char* kind : {".weight", ".bias"}) {
            const std::string name = layer + part + projection + kind;
            ckpt.Move("model." + name, name);
          }
        }
      }
    }
  };
  strip("encoder");
  strip("decoder");
  if (shared) {
    const std::string table = ckpt.Has("model.shared.weight") ? "model.shared.weight"
                                                              : "model.encoder.embed_tokens.weight";
    ckpt.Move(table, "encoder.embed_tokens.weight");
    ckpt.DropIfPresent("model.shared.weight");
    ckpt.DropIfPresent("model.encoder.embed_tokens.weight");
    ckpt.DropIfPresent("model.decoder.embed_tokens.weight");
  } else {
    ckpt.Move("model.encoder.embed_tokens.weight", "encoder.embed_tokens.weight");
    ckpt.Move("model.decoder.embed_tokens.weight", "decoder.embed_tokens.weight");
    ckpt.DropIfPresent("model.shared.weight");
  }
  if (c.share_decoder_input_output_embed) {
    ckpt.DropIfPresent("lm_head.weight");
  } else {
    ckpt.Move("lm_head.weight", "decoder.output_projection.weight");
  }
  // Saved position tables must be Marian's formula, which the server computes itself.
  for (const char* side :
       {"model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"}) {
    if (!ckpt.Has(side)) continue;
    const at::Tensor saved = ckpt.Peek(side).to(at::kFloat);
    const at::Tensor expected = MarianSinusoidalTable(saved.size(0), c.embed_dim);
    if (saved.sizes() != expected.sizes() || (saved - expected).abs().max().item<double>() > 1e-5) {
      throw ModelLoadError(std::string(side) +
                           ": is not Marian's sinusoidal table, the only positions imported");
    }
    ckpt.DropIfPresent(side);
  }
  if (ckpt.Has("final_logits_bias")) {
    c.output_bias = true;
    ckpt.Put("decoder.output_projection.bias", ckpt.Peek("final_logits_bias").reshape({-1}));
    ckpt.DropIfPresent("final_logits_bias");
  }
  out.files = {"source.spm", "target.spm", "vocab.json"};
  if (!shared) out.files.push_back(target_vocab);
  return out;
}

}  // namespace

ImportSummary ImportHuggingFaceModel(const std::string& hf_dir, const std::string& out_dir,
                                     std::optional<safetensors::DType> dtype) {
  const HfConfig hf(ConfinedFile(hf_dir, "config.json"));
  const std::string model_type = hf.String("model_type", "");
  safetensors::DType stored = safetensors::DType::kF32;
  Renaming checkpoint(ReadCheckpoint(hf_dir, &stored), hf_dir);
  Imported imported;
  if (model_type == "llama" || model_type == "mistral") {
    imported = ImportLlama(hf, hf_dir, checkpoint);
  } else if (model_type == "marian") {
    imported = ImportMarian(hf, hf_dir, checkpoint);
  } else {
    hf.Refuse("model_type", "is '" + model_type + "'; normserve imports marian, llama and mistral");
  }
  imported.weights = checkpoint.Finish();
  // Written through the strict parser first: a value it refuses fails here, not in the server.
  const std::string config_json = ModelConfigToJson(imported.config);
  ParseModelConfig(config_json, hf_dir + " (imported config.json)");

  fs::create_directories(out_dir);
  for (const std::string& file : imported.files) {
    fs::copy_file(ConfinedFile(hf_dir, file), fs::path(out_dir) / file,
                  fs::copy_options::overwrite_existing);
  }
  SaveWeights(out_dir + "/model.safetensors", imported.weights, dtype.value_or(stored));
  std::ofstream(out_dir + "/config.json") << config_json;
  // Loaded as the server loads it: every weight taken with its shape, the tokenizers' sizes.
  const auto model = ServedModel::Load(out_dir, "import", 1);
  return {model_type, model->norm_label(), model->parameter_count()};
}

}  // namespace normserve
