#include "models/io/norm_conversion.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "models/errors.h"
#include "models/io/confined_path.h"
#include "models/io/safetensors.h"
#include "models/io/weights_io.h"

namespace normserve {
namespace {

at::Tensor& Find(std::map<std::string, at::Tensor>& weights, const std::string& name,
                 const std::string& source) {
  const auto it = weights.find(name);
  if (it == weights.end()) {
    throw ModelLoadError(source + ": tensor '" + name + "' is missing; the config implies it");
  }
  return it->second;
}

// Subtracts the mean over dimension `dim`, computed in double so that the result's mean is
// zero to the storage dtype's rounding.
void SubtractMean(at::Tensor& t, int64_t dim) {
  const at::Tensor wide = t.to(at::kDouble);
  t = (wide - wide.mean(dim, /*keepdim=*/true)).to(t.scalar_type());
}

// Makes a linear layer's output zero-mean for any input: the mean over its output rows
// leaves the weight [out, in] and the bias [out].
void RecentreOutputs(std::map<std::string, at::Tensor>& weights, const std::string& prefix,
                     const std::string& source) {
  SubtractMean(Find(weights, prefix + ".weight", source), 0);
  SubtractMean(Find(weights, prefix + ".bias", source), 0);
}

// Keeps the first `count` entries of dimension `dim`.
void KeepFirst(at::Tensor& t, int64_t dim, int64_t count) {
  t = t.narrow(dim, 0, count).contiguous();
}

// Pre-RMSNorm -> Pre-CRMSNorm: every tensor that writes to the d-channel zero-mean stream
// keeps its first d - 1 channels (tables, output projections); every linear that reads a
// norm's output y = x * rstd * g + b (x zero-mean, so x[d-1] = -sum(x[:d-1])) reads
// u = x[:d-1] * rstd instead, so it absorbs the gain, the bias and the dropped channel:
//   W y + c = sum_i<d-1 (W[:, i] g_i - W[:, d-1] g_{d-1}) u_i + (c + W b).
// The norms keep gain 1 and no bias. `norm` is the RMSNorm site's weight prefix; `readers`
// the linears that read its output; the bias of a reader that has none (the output layer)
// is created.
class StreamCompressor {
 public:
  StreamCompressor(std::map<std::string, at::Tensor>& weights, int64_t d, std::string source)
      : weights_(weights), d_(d), source_(std::move(source)) {}

  void Table(const std::string& name) { KeepFirst(Find(weights_, name, source_), 1, d_ - 1); }
  void Writer(const std::string& prefix) {
    KeepFirst(Find(weights_, prefix + ".weight", source_), 0, d_ - 1);
    KeepFirst(Find(weights_, prefix + ".bias", source_), 0, d_ - 1);
  }
  void Norm(const std::string& norm, const std::vector<std::string>& readers) {
    at::Tensor& gain = Find(weights_, norm + ".weight", source_);
    const at::Tensor g = gain.to(at::kDouble);
    const at::Tensor b = Find(weights_, norm + ".bias", source_).to(at::kDouble);
    for (const std::string& reader : readers) {
      at::Tensor& weight = Find(weights_, reader + ".weight", source_);
      const at::Tensor w = weight.to(at::kDouble);
      const at::Tensor folded =
          w.narrow(1, 0, d_ - 1) * g.narrow(0, 0, d_ - 1) - w.narrow(1, d_ - 1, 1) * g[d_ - 1];
      const auto bias = weights_.find(reader + ".bias");
      const at::Tensor c = bias != weights_.end() ? bias->second.to(at::kDouble)
                                                  : at::zeros({w.size(0)}, at::kDouble);
      const at::ScalarType dtype = weight.scalar_type();
      weights_[reader + ".bias"] = (c + at::mv(w, b)).to(dtype);
      weight = folded.to(dtype).contiguous();
    }
    gain = at::ones({d_ - 1}, gain.scalar_type());
    weights_.erase(norm + ".bias");
  }

 private:
  std::map<std::string, at::Tensor>& weights_;
  const int64_t d_;
  const std::string source_;
};

// Compresses the stream of a Pre-RMSNorm model made by the recentring above.
void CompressStream(ModelConfig& c, std::map<std::string, at::Tensor>& weights,
                    const std::string& source) {
  const int64_t d = c.embed_dim;
  StreamCompressor compress(weights, d, source);
  // The output layer has a table of its own by now (untied by the recentring).
  if (c.is_mt()) compress.Table("encoder.embed_tokens.weight");
  if (!c.is_mt() || !c.share_all_embeddings) compress.Table("decoder.embed_tokens.weight");
  const auto qkv = [](const std::string& attention) {
    return std::vector<std::string>{attention + ".q_proj", attention + ".k_proj",
                                    attention + ".v_proj"};
  };
  std::vector<std::string> memory_readers;  // the cross-attention keys and values
  for (int64_t i = 0; i < c.decoder_layers; ++i) {
    const std::string p = "decoder.layers." + std::to_string(i);
    compress.Norm(p + ".self_attn_layer_norm", qkv(p + ".self_attn"));
    compress.Writer(p + ".self_attn.out_proj");
    if (c.is_mt()) {
      compress.Norm(p + ".encoder_attn_layer_norm", {p + ".encoder_attn.q_proj"});
      compress.Writer(p + ".encoder_attn.out_proj");
      memory_readers.push_back(p + ".encoder_attn.k_proj");
      memory_readers.push_back(p + ".encoder_attn.v_proj");
    }
    compress.Norm(p + ".final_layer_norm", {p + ".fc1"});
    compress.Writer(p + ".fc2");
  }
  for (int64_t i = 0; i < c.encoder_layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i);
    compress.Norm(p + ".self_attn_layer_norm", qkv(p + ".self_attn"));
    compress.Writer(p + ".self_attn.out_proj");
    compress.Norm(p + ".final_layer_norm", {p + ".fc1"});
    compress.Writer(p + ".fc2");
  }
  if (c.is_mt()) compress.Norm("encoder.layer_norm", memory_readers);
  compress.Norm("decoder.layer_norm", {"decoder.output_projection"});
  c.output_bias = true;
  c.residual_dim = d - 1;
  for (auto& [site, norm] : c.norms) {
    norm.kind = NormKind::kCRMSNorm;
    norm.bias = false;
  }
}

}  // namespace

std::string NormConversionRefusal(const ModelConfig& config) {
  constexpr char kFix[] =
      "; only a Pre-LN model (normalize_before true, layernorm at every site) converts "
      "losslessly";
  if (!config.normalize_before) {
    return std::string(
               "the model is post-norm (normalize_before false): its norms follow the "
               "residual add, whose mean no recentring of weights removes") +
           kFix;
  }
  if (config.positions != PositionEncoding::kSinusoidal) {
    return "the model's positions are not fairseq's sinusoids, whose zero-mean form the "
           "converted model adds; only fairseq-style Pre-LN models convert";
  }
  if (!config.linear_bias) {
    return "the model's projections have no biases, which the recentred outputs need; only "
           "fairseq-style Pre-LN models convert";
  }
  for (NormSite site : config.sites()) {
    const NormKind kind = config.norm(site).kind;
    if (kind == NormKind::kLayerNorm) continue;
    std::string why = "norm site '" + std::string(NormSiteName(site)) + "' is " +
                      std::string(NormKindName(kind)) +
                      " (the model's norms: " + config.norm_label() + ")";
    if (kind == NormKind::kPowerNorm || kind == NormKind::kBatchNorm) {
      why += ", which normalizes by running statistics that no RMSNorm reproduces";
    }
    return why + kFix;
  }
  return "";
}

ModelConfig ConvertNorm(const ModelConfig& config, std::map<std::string, at::Tensor>& weights,
                        NormKind target, const std::string& source) {
  const std::string name(NormKindName(target));
  if (target != NormKind::kRMSNorm && target != NormKind::kCRMSNorm) {
    throw ModelLoadError(source + ": cannot convert to " + name +
                         "; only rmsnorm and crmsnorm are lossless targets");
  }
  if (const std::string why = NormConversionRefusal(config); !why.empty()) {
    throw ModelLoadError(source + ": cannot convert to " + name + ": " + why);
  }
  ModelConfig converted = config;
  for (auto& [site, norm] : converted.norms) {
    // Same gain, bias, eps and eps placement: on a zero-mean row the mean square is the
    // variance, so sqrt(ms + eps) (or sqrt(ms) + eps) is LayerNorm's denominator.
    norm.kind = NormKind::kRMSNorm;
    norm.bias = true;
  }
  converted.positions = PositionEncoding::kSinusoidalZeroMean;

  const bool shared_tables = config.is_mt() && config.share_all_embeddings;
  const std::string target_table =
      shared_tables ? "encoder.embed_tokens.weight" : "decoder.embed_tokens.weight";
  if (config.share_decoder_input_output_embed) {
    weights["decoder.output_projection.weight"] = Find(weights, target_table, source).clone();
    converted.share_decoder_input_output_embed = false;
  }
  std::vector<std::string> tables = {target_table};
  if (config.is_mt() && !shared_tables) tables.push_back("encoder.embed_tokens.weight");
  for (const std::string& table : tables) SubtractMean(Find(weights, table, source), 1);

  for (int64_t i = 0; i < config.encoder_layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i);
    RecentreOutputs(weights, p + ".self_attn.out_proj", source);
    RecentreOutputs(weights, p + ".fc2", source);
  }
  for (int64_t i = 0; i < config.decoder_layers; ++i) {
    const std::string p = "decoder.layers." + std::to_string(i);
    RecentreOutputs(weights, p + ".self_attn.out_proj", source);
    if (config.is_mt()) RecentreOutputs(weights, p + ".encoder_attn.out_proj", source);
    RecentreOutputs(weights, p + ".fc2", source);
  }
  if (target == NormKind::kCRMSNorm) CompressStream(converted, weights, source);
  return converted;
}

void ConvertModelDirectory(const std::string& input_dir, const std::string& output_dir,
                           NormKind target, std::optional<safetensors::DType> dtype) {
  namespace fs = std::filesystem;
  for (const char* file : {"config.json", "model.safetensors"}) {
    if (fs::exists(fs::path(output_dir) / file)) {
      throw ModelLoadError(output_dir + " already holds a model (" + file +
                           "); choose a new or empty directory");
    }
  }
  const std::string config_path = ConfinedFile(input_dir, "config.json");
  const ModelConfig config = LoadModelConfig(config_path);
  if (const std::string why = NormConversionRefusal(config); !why.empty()) {
    throw ModelLoadError(config_path + ": cannot convert to " + std::string(NormKindName(target)) +
                         ": " + why);
  }
  const std::string weights_path = ConfinedFile(input_dir, "model.safetensors");
  safetensors::DType stored = safetensors::DType::kF32;
  std::map<std::string, at::Tensor> weights = LoadWeights(weights_path, &stored);
  const ModelConfig converted = ConvertNorm(config, weights, target, weights_path);

  fs::create_directories(output_dir);
  for (const std::string& file : config.tokenizer_files()) {
    fs::copy_file(ConfinedFile(input_dir, file), fs::path(output_dir) / file,
                  fs::copy_options::overwrite_existing);
  }
  SaveWeights(output_dir + "/model.safetensors", weights, dtype.value_or(stored));
  // Last: a repository that watches output_dir sees a version complete only now.
  std::ofstream out(output_dir + "/config.json");
  out << ModelConfigToJson(converted);
  if (!out.flush()) throw ModelLoadError(output_dir + "/config.json: cannot write");
}

}  // namespace normserve
