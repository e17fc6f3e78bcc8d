#include "models/io/model_config.h"

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <type_traits>
#include <utility>

#include "models/errors.h"
#include "models/io/text_file.h"

namespace normserve {
namespace {

using nlohmann::json;

constexpr NormSite kAllSites[] = {NormSite::kEncoderSelfAttn, NormSite::kEncoderFfn,
                                  NormSite::kDecoderSelfAttn, NormSite::kDecoderCrossAttn,
                                  NormSite::kDecoderFfn,      NormSite::kFinal};

// Fields config.json may hold; any other key is refused, so that a misspelt field cannot
// silently leave its default in place.
const std::set<std::string> kTopLevelFields = {"architecture",
                                               "embed_dim",
                                               "residual_dim",
                                               "output_bias",
                                               "ffn_dim",
                                               "attention_heads",
                                               "encoder_layers",
                                               "decoder_layers",
                                               "normalize_before",
                                               "activation",
                                               "positions",
                                               "rope_theta",
                                               "scale_embedding",
                                               "kv_heads",
                                               "linear_bias",
                                               "max_positions",
                                               "share_all_embeddings",
                                               "share_decoder_input_output_embed",
                                               "source_vocab_size",
                                               "target_vocab_size",
                                               "vocab_size",
                                               "tokenizer",
                                               "special_tokens",
                                               "norm"};
const std::set<std::string> kNormFields = {"type",      "eps",           "bias",
                                           "p",         "k_rounding",    "groups",
                                           "group_eps", "eps_placement", "layer_scaling"};
const std::set<std::string> kSpecialTokenFields = {"bos", "pad", "eos", "unk", "decoder_start"};
const std::set<std::string> kTokenizerFields = {
    "source", "target", "model", "source_vocab", "target_vocab", "vocab", "language_tags"};

// The names of config.json, in the order the enums declare them.
constexpr std::pair<PositionEncoding, const char*> kPositionNames[] = {
    {PositionEncoding::kSinusoidal, "sinusoidal"},
    {PositionEncoding::kSinusoidalZeroMean, "sinusoidal_zero_mean"},
    {PositionEncoding::kMarianSinusoidal, "marian_sinusoidal"},
    {PositionEncoding::kRotary, "rotary"}};
constexpr std::pair<Activation, const char*> kActivationNames[] = {{Activation::kReLU, "relu"},
                                                                   {Activation::kGELU, "gelu"},
                                                                   {Activation::kSiLU, "silu"},
                                                                   {Activation::kSwiGLU, "swiglu"}};

template <typename Enum, size_t N>
const char* NameOf(const std::pair<Enum, const char*> (&names)[N], Enum value) {
  for (const auto& [e, name] : names) {
    if (e == value) return name;
  }
  return "?";
}

// The value named `name`, or a failure listing the names.
template <typename Enum, size_t N>
Enum ParseNamed(const std::pair<Enum, const char*> (&names)[N], const std::string& name,
                const std::function<void(const std::string&)>& fail) {
  std::string known;
  for (const auto& [e, n] : names) {
    if (name == n) return e;
    known += (known.empty() ? "" : ", ") + std::string(n);
  }
  fail("is '" + name + "'; use one of " + known);
  return names[0].first;
}

// The sinusoidal position tables hold (max_positions + pad + 1) x embed_dim floats each and
// are computed at load from the config alone: bounded so that a config cannot make the
// server allocate and fill many GiB before any weight is checked.
constexpr int64_t kMaxPositionTableEntries = int64_t{1} << 28;

template <typename T>
const char* TypeName() {
  if constexpr (std::is_same_v<T, bool>) {
    return "true or false";
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return "an integer";
  } else if constexpr (std::is_same_v<T, double>) {
    return "a number";
  } else {
    static_assert(std::is_same_v<T, std::string>);
    return "a string";
  }
}

// Strict JSON types: nlohmann's get<>() would turn true into 1, 2.7 into 2 and a huge
// unsigned into a negative integer.
template <typename T>
bool HasType(const json& v) {
  if constexpr (std::is_same_v<T, bool>) {
    return v.is_boolean();
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return v.is_number_integer() &&
           !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX});
  } else if constexpr (std::is_same_v<T, double>) {
    return v.is_number();
  } else {
    static_assert(std::is_same_v<T, std::string>);
    return v.is_string();
  }
}

class Reader {
 public:
  Reader(const json& root, std::string source) : root_(root), source_(std::move(source)) {}

  [[noreturn]] void Fail(const std::string& field, const std::string& problem) const {
    throw ModelLoadError(source_ + ": '" + field + "' " + problem);
  }

  template <typename T>
  T Get(const json& obj, const std::string& field, const T& fallback,
        const std::string& path) const {
    auto it = obj.find(field);
    if (it == obj.end()) return fallback;
    if (!HasType<T>(*it)) {
      Fail(path,
           std::string("has the wrong type: must be ") + TypeName<T>() + ", got " + it->dump());
    }
    return it->get<T>();
  }
  template <typename T>
  T Get(const std::string& field, const T& fallback) const {
    return Get(root_, field, fallback, field);
  }
  int64_t Positive(const std::string& field, int64_t fallback, int64_t max) const {
    const int64_t v = Get<int64_t>(field, fallback);
    if (v < 1 || v > max)
      Fail(field, "must be in 1.." + std::to_string(max) + ", got " + std::to_string(v));
    return v;
  }
  // An object whose keys are all in `known`, or {} when absent.
  const json& Object(const json& parent, const std::string& field, const std::string& path,
                     const std::set<std::string>& known) const {
    static const json kEmpty = json::object();
    const auto it = parent.find(field);
    if (it == parent.end()) return kEmpty;
    if (!it->is_object()) Fail(path, "must be an object");
    OnlyKnownKeys(*it, path + ".", known);
    return *it;
  }
  void OnlyKnownKeys(const json& obj, const std::string& prefix,
                     const std::set<std::string>& known) const {
    for (const auto& [key, value] : obj.items()) {
      if (!known.count(key)) Fail(prefix + key, "is not a known field");
    }
  }
  // A file inside the version directory: a plain name, never a path out of it.
  std::string FileName(const json& obj, const std::string& field, const std::string& path) const {
    const std::string name = Get<std::string>(obj, field, "", path);
    if (!name.empty() && (name.find('/') != std::string::npos || name == "." || name == ".." ||
                          name.find('\0') != std::string::npos)) {
      Fail(path, "must be a file name inside the version directory, got \"" + name + "\"");
    }
    return name;
  }

  NormConfig Norm(const json& obj, const std::string& path) const {
    if (!obj.is_object()) Fail(path, "must be an object like {\"type\": \"rmsnorm\"}");
    OnlyKnownKeys(obj, path + ".", kNormFields);
    NormConfig c;
    const std::string type = Get<std::string>(obj, "type", "", path + ".type");
    const auto kind = ParseNormKind(type);
    if (!kind) {
      Fail(path + ".type",
           "is '" + type + "'; use layernorm, rmsnorm, prmsnorm, powernorm, batchnorm or crmsnorm");
    }
    c.kind = *kind;
    c.eps = Get<double>(obj, "eps", c.eps, path + ".eps");
    c.bias = Get<bool>(obj, "bias", c.bias, path + ".bias");
    c.partial = Get<double>(obj, "p", c.partial, path + ".p");
    const std::string rounding = Get<std::string>(obj, "k_rounding", "ceil", path + ".k_rounding");
    if (rounding != "ceil" && rounding != "floor")
      Fail(path + ".k_rounding", "must be ceil or floor");
    c.partial_round_up = rounding == "ceil";
    const std::string eps_at =
        Get<std::string>(obj, "eps_placement", "inside_sqrt", path + ".eps_placement");
    if (eps_at != "inside_sqrt" && eps_at != "outside_sqrt") {
      Fail(path + ".eps_placement", "must be inside_sqrt or outside_sqrt");
    }
    c.eps_inside_sqrt = eps_at == "inside_sqrt";
    c.groups = Get<int64_t>(obj, "groups", c.groups, path + ".groups");
    c.group_eps = Get<double>(obj, "group_eps", c.group_eps, path + ".group_eps");
    c.layer_scaling = Get<bool>(obj, "layer_scaling", false, path + ".layer_scaling");
    if (c.layer_scaling && c.kind != NormKind::kBatchNorm) {
      Fail(path + ".layer_scaling", "is for batchnorm only");
    }
    if (!(c.eps > 0)) Fail(path + ".eps", "must be positive");
    if (!(c.group_eps > 0)) Fail(path + ".group_eps", "must be positive");
    if (!(c.partial > 0 && c.partial <= 1)) Fail(path + ".p", "must be in (0, 1]");
    if (c.groups < 1) Fail(path + ".groups", "must be at least 1");
    return c;
  }

  const json& root() const { return root_; }

 private:
  const json& root_;
  std::string source_;
};

json NormToJson(const NormConfig& c) {
  json j = {{"type", NormKindName(c.kind)}, {"eps", c.eps}};
  const bool rms = c.kind == NormKind::kRMSNorm || c.kind == NormKind::kPartialRMSNorm ||
                   c.kind == NormKind::kCRMSNorm;
  if (rms) j["bias"] = c.bias;
  if (c.kind == NormKind::kLayerNorm || rms) {
    j["eps_placement"] = c.eps_inside_sqrt ? "inside_sqrt" : "outside_sqrt";
  }
  if (c.kind == NormKind::kPartialRMSNorm) {
    j["p"] = c.partial;
    j["k_rounding"] = c.partial_round_up ? "ceil" : "floor";
  }
  if (c.kind == NormKind::kPowerNorm) {
    j["groups"] = c.groups;
    j["group_eps"] = c.group_eps;
  }
  if (c.layer_scaling) {
    j["layer_scaling"] = true;
    j["group_eps"] = c.group_eps;
  }
  return j;
}

// "residual_dim": embed_dim, or embed_dim - 1 for a Pre-CRMSNorm model, whose every site is
// crmsnorm and whose stream (positions included) is zero-mean; crmsnorm needs that stream.
void CheckResidualDim(const Reader& r, ModelConfig& c) {
  const int64_t d = c.embed_dim;
  c.residual_dim = r.Get<int64_t>("residual_dim", d);
  std::vector<std::string> crms, other;
  for (NormSite s : c.sites()) {
    (c.norm(s).kind == NormKind::kCRMSNorm ? crms : other).push_back(NormSiteName(s));
  }
  if (c.residual_dim == d) {
    if (!crms.empty()) {
      r.Fail("norm." + crms.front(),
             "is crmsnorm, which needs the compressed residual stream: set residual_dim to "
             "embed_dim - 1 = " +
                 std::to_string(d - 1) + " (a Pre-LN model converts with --norm crmsnorm)");
    }
    return;
  }
  if (c.residual_dim != d - 1 || d < 2) {
    r.Fail("residual_dim", "is " + std::to_string(c.residual_dim) + "; it must be embed_dim (" +
                               std::to_string(d) + ") or, for a Pre-CRMSNorm model, embed_dim - 1");
  }
  if (!c.normalize_before || !other.empty()) {
    r.Fail("residual_dim",
           "is embed_dim - 1, the compressed stream of Pre-CRMSNorm: it needs "
           "normalize_before true and crmsnorm at every site" +
               (other.empty() ? std::string() : ", but '" + other.front() + "' is not"));
  }
  if (!c.zero_mean_positions()) {
    r.Fail("positions",
           "must be sinusoidal_zero_mean with residual_dim embed_dim - 1: the compressed stream "
           "drops the last channel of a zero-mean one");
  }
}

}  // namespace

const char* NormSiteName(NormSite site) {
  switch (site) {
    case NormSite::kEncoderSelfAttn:
      return "encoder_self_attn";
    case NormSite::kEncoderFfn:
      return "encoder_ffn";
    case NormSite::kDecoderSelfAttn:
      return "decoder_self_attn";
    case NormSite::kDecoderCrossAttn:
      return "decoder_cross_attn";
    case NormSite::kDecoderFfn:
      return "decoder_ffn";
    case NormSite::kFinal:
      return "final";
  }
  return "?";
}

std::vector<NormSite> ModelConfig::sites() const {
  std::vector<NormSite> out;
  for (NormSite s : kAllSites) {
    const bool encoder = s == NormSite::kEncoderSelfAttn || s == NormSite::kEncoderFfn;
    const bool cross = s == NormSite::kDecoderCrossAttn;
    if ((encoder || cross) && !is_mt()) continue;
    if (s == NormSite::kFinal && !normalize_before) continue;  // post-norm has no final norm
    out.push_back(s);
  }
  return out;
}

std::vector<std::string> ModelConfig::tokenizer_files() const {
  std::vector<std::string> files;
  for (const TokenizerFiles* t : {&target_tokenizer, &source_tokenizer}) {
    for (const std::string* file : {&t->spm, &t->vocab}) {
      if (!file->empty() && std::find(files.begin(), files.end(), *file) == files.end()) {
        files.push_back(*file);
      }
    }
  }
  return files;
}

std::string ModelConfig::norm_label() const {
  std::vector<std::string_view> seen;
  for (NormSite s : sites()) {
    const std::string_view name = NormKindName(norm(s).kind);
    if (std::find(seen.begin(), seen.end(), name) == seen.end()) seen.push_back(name);
  }
  std::string label;
  for (auto name : seen) label += (label.empty() ? "" : "+") + std::string(name);
  return label;
}

ModelConfig ParseModelConfig(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw ModelLoadError(source + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) throw ModelLoadError(source + ": must be a JSON object");
  Reader r(root, source);
  r.OnlyKnownKeys(root, "", kTopLevelFields);
  ModelConfig c;
  const std::string arch = r.Get<std::string>("architecture", "");
  if (arch == "transformer_mt")
    c.architecture = Architecture::kTransformerMT;
  else if (arch == "transformer_lm")
    c.architecture = Architecture::kTransformerLM;
  else
    r.Fail("architecture", "is '" + arch + "'; use transformer_mt or transformer_lm");

  c.embed_dim = r.Positive("embed_dim", c.embed_dim, 1 << 16);
  c.ffn_dim = r.Positive("ffn_dim", c.ffn_dim, 1 << 18);
  c.attention_heads = r.Positive("attention_heads", c.attention_heads, 1024);
  if (c.embed_dim % c.attention_heads != 0) {
    r.Fail("attention_heads", "must divide embed_dim " + std::to_string(c.embed_dim));
  }
  c.decoder_layers = r.Positive("decoder_layers", c.decoder_layers, 256);
  c.normalize_before = r.Get<bool>("normalize_before", c.normalize_before);
  const auto fail_at = [&r](const char* field) {
    return [&r, field](const std::string& problem) { r.Fail(field, problem); };
  };
  c.activation =
      ParseNamed(kActivationNames, r.Get<std::string>("activation", "relu"), fail_at("activation"));
  c.max_positions = r.Positive("max_positions", c.max_positions, 1 << 20);
  c.positions = ParseNamed(kPositionNames, r.Get<std::string>("positions", "sinusoidal"),
                           fail_at("positions"));
  c.scale_embedding = r.Get<bool>("scale_embedding", c.scale_embedding);
  c.linear_bias = r.Get<bool>("linear_bias", c.linear_bias);
  c.kv_heads = r.Positive("kv_heads", c.attention_heads, c.attention_heads);
  if (c.attention_heads % c.kv_heads != 0) {
    r.Fail("kv_heads", "is " + std::to_string(c.kv_heads) + "; it must divide attention_heads " +
                           std::to_string(c.attention_heads));
  }
  if (c.positions == PositionEncoding::kRotary) {
    c.rope_theta = r.Get<double>("rope_theta", c.rope_theta);
    if (!(c.rope_theta > 1)) r.Fail("rope_theta", "must be a number above 1");
    if (c.head_dim() % 2 != 0) {
      r.Fail("positions",
             "is rotary, which needs an even head size (embed_dim / "
             "attention_heads), got " +
                 std::to_string(c.head_dim()));
    }
  } else if (r.root().contains("rope_theta")) {
    r.Fail("rope_theta", "is set but positions is not rotary");
  }

  const json& tok = r.Object(root, "tokenizer", "tokenizer", kTokenizerFields);
  const auto tokenizer_files = [&](const char* spm, const char* vocab) {
    return TokenizerFiles{r.FileName(tok, spm, std::string("tokenizer.") + spm),
                          r.FileName(tok, vocab, std::string("tokenizer.") + vocab)};
  };
  for (const char* field : {"source", "target", "source_vocab", "target_vocab", "language_tags"}) {
    if (!c.is_mt() && tok.contains(field)) {
      r.Fail(std::string("tokenizer.") + field,
             "is for transformer_mt; a transformer_lm names {\"model\": ..., \"vocab\": ...}");
    }
  }
  for (const char* field : {"model", "vocab"}) {
    if (c.is_mt() && tok.contains(field)) {
      r.Fail(std::string("tokenizer.") + field,
             "is for transformer_lm; a transformer_mt names source, target, source_vocab and "
             "target_vocab");
    }
  }
  if (c.is_mt()) {
    c.encoder_layers = r.Positive("encoder_layers", c.encoder_layers, 256);
    c.share_all_embeddings = r.Get<bool>("share_all_embeddings", c.share_all_embeddings);
    c.source_vocab_size = r.Positive("source_vocab_size", 0, 1 << 24);
    c.target_vocab_size = r.Positive("target_vocab_size", 0, 1 << 24);
    c.source_tokenizer = tokenizer_files("source", "source_vocab");
    c.target_tokenizer = tokenizer_files("target", "target_vocab");
    c.language_tags = r.Get<bool>(tok, "language_tags", false, "tokenizer.language_tags");
    if (c.share_all_embeddings && c.source_vocab_size != c.target_vocab_size) {
      r.Fail("share_all_embeddings", "needs source_vocab_size == target_vocab_size");
    }
    if (c.kv_heads != c.attention_heads) {
      r.Fail("kv_heads",
             "must equal attention_heads in a transformer_mt (grouped-query "
             "attention is supported in transformer_lm models)");
    }
    if (c.positions == PositionEncoding::kRotary) {
      r.Fail("positions", "rotary is supported in transformer_lm models only");
    }
  } else {
    c.encoder_layers = 0;
    c.target_vocab_size = r.Positive("vocab_size", 0, 1 << 24);
    c.target_tokenizer = tokenizer_files("model", "vocab");
  }
  if (c.target_tokenizer.spm.empty() || (c.is_mt() && c.source_tokenizer.spm.empty())) {
    r.Fail("tokenizer", c.is_mt() ? "must name source and target SentencePiece files"
                                  : "must name the SentencePiece file as {\"model\": ...}");
  }
  c.share_decoder_input_output_embed =
      r.Get<bool>("share_decoder_input_output_embed", c.share_decoder_input_output_embed);
  c.output_bias = r.Get<bool>("output_bias", c.output_bias);

  const json& special = r.Object(root, "special_tokens", "special_tokens", kSpecialTokenFields);
  c.special.bos = r.Get<int64_t>(special, "bos", c.special.bos, "special_tokens.bos");
  c.special.pad = r.Get<int64_t>(special, "pad", c.special.pad, "special_tokens.pad");
  c.special.eos = r.Get<int64_t>(special, "eos", c.special.eos, "special_tokens.eos");
  c.special.unk = r.Get<int64_t>(special, "unk", c.special.unk, "special_tokens.unk");
  c.special.decoder_start =
      r.Get<int64_t>(special, "decoder_start", c.special.eos, "special_tokens.decoder_start");
  // The decoder and the output layer use them all; the encoder embeds <pad>, </s> and <unk>
  // of the source side, so an MT model needs them in both vocabularies.
  const auto check_id = [&r](const char* which, int64_t id, int64_t vocab, const char* vocabulary) {
    if (id < 0 || id >= vocab) {
      r.Fail(std::string("special_tokens.") + which,
             "is " + std::to_string(id) + ", outside the " + vocabulary + " of " +
                 std::to_string(vocab) + " tokens (ids 0.." + std::to_string(vocab - 1) + ")");
    }
  };
  // Only a language model may do without <pad> (Llama has none): an encoder needs it to
  // mark the padding of its sources.
  const bool no_pad = c.special.pad == SpecialTokens::kNone && !c.is_mt();
  if (c.special.pad == SpecialTokens::kNone && c.is_mt()) {
    r.Fail("special_tokens.pad",
           "is -1 (none), which only a transformer_lm may be: the encoder "
           "of a transformer_mt marks the padding of its sources with <pad>");
  }
  std::vector<std::pair<const char*, int64_t>> ids = {{"bos", c.special.bos},
                                                      {"eos", c.special.eos},
                                                      {"unk", c.special.unk},
                                                      {"decoder_start", c.special.decoder_start}};
  if (!no_pad) ids.emplace_back("pad", c.special.pad);
  for (const auto& id : ids) {
    check_id(id.first, id.second, c.target_vocab_size,
             c.is_mt() ? "target vocabulary" : "vocabulary");
    if (c.is_mt()) check_id(id.first, id.second, c.source_vocab_size, "source vocabulary");
  }
  // <pad> is never an output and marks padding in every batch: it cannot share an id with
  // </s> or <unk> (<s> may equal </s>, as in fairseq's dictionaries).
  if (!no_pad && (c.special.pad == c.special.eos || c.special.pad == c.special.unk ||
                  c.special.pad == c.special.bos)) {
    r.Fail("special_tokens.pad", "is " + std::to_string(c.special.pad) +
                                     ", the id of another special token; <pad> needs its own");
  }
  if (c.special.eos == c.special.unk) {
    r.Fail("special_tokens.unk",
           "is " + std::to_string(c.special.unk) + ", the id of </s>; <unk> needs its own");
  }
  // Rotary tables hold a cosine and a sine per position and half head.
  const int64_t table_entries =
      (c.max_positions + c.special.pad + 1) *
      (c.positions == PositionEncoding::kRotary ? c.head_dim() : c.embed_dim);
  if (table_entries > kMaxPositionTableEntries) {
    r.Fail("max_positions", "is " + std::to_string(c.max_positions) + ": with embed_dim " +
                                std::to_string(c.embed_dim) + " and <pad> id " +
                                std::to_string(c.special.pad) + " its position table would hold " +
                                std::to_string(table_entries) + " values, more than the " +
                                std::to_string(kMaxPositionTableEntries) + " allowed");
  }

  if (!root.contains("norm") || !root["norm"].is_object()) {
    r.Fail("norm", "must be an object: {\"default\": {\"type\": ...}, <site>: {...}}");
  }
  const json& norm = root["norm"];
  for (const auto& [key, value] : norm.items()) {
    bool known = key == "default";
    for (NormSite s : kAllSites) known = known || key == NormSiteName(s);
    if (!known) {
      r.Fail("norm." + key,
             "is not a norm site; use default, encoder_self_attn, encoder_ffn, "
             "decoder_self_attn, decoder_cross_attn, decoder_ffn or final");
    }
  }
  const bool has_default = norm.contains("default");
  for (NormSite s : c.sites()) {
    const std::string name = NormSiteName(s);
    if (norm.contains(name)) {
      c.norms[s] = r.Norm(norm[name], "norm." + name);
    } else if (s == NormSite::kDecoderCrossAttn && norm.contains("decoder_self_attn")) {
      c.norms[s] = r.Norm(norm["decoder_self_attn"], "norm.decoder_self_attn");
    } else if (has_default) {
      c.norms[s] = r.Norm(norm["default"], "norm.default");
    } else {
      r.Fail("norm." + name, "is missing and there is no norm.default");
    }
    const NormConfig& nc = c.norms[s];
    if (nc.kind == NormKind::kPowerNorm && c.embed_dim % nc.groups != 0) {
      r.Fail("norm." + name + ".groups", "must divide embed_dim " + std::to_string(c.embed_dim));
    }
  }
  CheckResidualDim(r, c);
  return c;
}

ModelConfig LoadModelConfig(const std::string& path) {
  return ParseModelConfig(ReadTextFile(path), path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j;
  j["architecture"] = c.is_mt() ? "transformer_mt" : "transformer_lm";
  j["embed_dim"] = c.embed_dim;
  if (c.stream_dim() != c.embed_dim) j["residual_dim"] = c.stream_dim();
  j["ffn_dim"] = c.ffn_dim;
  j["attention_heads"] = c.attention_heads;
  if (c.is_mt()) j["encoder_layers"] = c.encoder_layers;
  j["decoder_layers"] = c.decoder_layers;
  j["normalize_before"] = c.normalize_before;
  j["activation"] = NameOf(kActivationNames, c.activation);
  j["positions"] = NameOf(kPositionNames, c.positions);
  if (c.positions == PositionEncoding::kRotary) j["rope_theta"] = c.rope_theta;
  if (!c.scale_embedding) j["scale_embedding"] = false;
  if (c.key_value_heads() != c.attention_heads) j["kv_heads"] = c.key_value_heads();
  if (!c.linear_bias) j["linear_bias"] = false;
  j["max_positions"] = c.max_positions;
  if (c.is_mt()) {
    j["share_all_embeddings"] = c.share_all_embeddings;
    j["source_vocab_size"] = c.source_vocab_size;
    j["target_vocab_size"] = c.target_vocab_size;
    j["tokenizer"] = {{"source", c.source_tokenizer.spm}, {"target", c.target_tokenizer.spm}};
    if (!c.source_tokenizer.vocab.empty())
      j["tokenizer"]["source_vocab"] = c.source_tokenizer.vocab;
    if (!c.target_tokenizer.vocab.empty())
      j["tokenizer"]["target_vocab"] = c.target_tokenizer.vocab;
    if (c.language_tags) j["tokenizer"]["language_tags"] = true;
  } else {
    j["vocab_size"] = c.target_vocab_size;
    j["tokenizer"] = {{"model", c.target_tokenizer.spm}};
    if (!c.target_tokenizer.vocab.empty()) j["tokenizer"]["vocab"] = c.target_tokenizer.vocab;
  }
  j["share_decoder_input_output_embed"] = c.share_decoder_input_output_embed;
  if (c.output_bias) j["output_bias"] = true;
  j["special_tokens"] = {{"bos", c.special.bos},
                         {"pad", c.special.pad},
                         {"eos", c.special.eos},
                         {"unk", c.special.unk}};
  if (c.special.decoder_start != c.special.eos) {
    j["special_tokens"]["decoder_start"] = c.special.decoder_start;
  }
  json norm = json::object();
  for (const auto& [site, nc] : c.norms) norm[NormSiteName(site)] = NormToJson(nc);
  j["norm"] = norm;
  return j.dump(2) + "\n";
}

}  // namespace normserve
