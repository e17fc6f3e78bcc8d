#include "models/train/train_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>

#include "models/transformer/embedding.h"

namespace normserve::train {
namespace {

// Inverted dropout with masks drawn from `generator` (the default one when undefined).
at::Tensor Dropout(const at::Tensor& x, double p, const ForwardMode& mode,
                   const at::Generator& generator) {
  if (!mode.training || p <= 0) return x;
  at::Tensor keep = at::empty(x.sizes(), x.options().requires_grad(false));
  keep.bernoulli_(1.0 - p, generator.defined() ? c10::optional<at::Generator>(generator)
                                               : c10::optional<at::Generator>());
  keep.mul_(1.0 / (1.0 - p));
  return x * keep;
}

struct Init {
  at::Generator generator;
  at::TensorOptions options;

  at::Tensor XavierUniform(int64_t out, int64_t in, double gain = 1.0) {
    const double bound = gain * std::sqrt(6.0 / static_cast<double>(in + out));
    return at::empty({out, in}, options).uniform_(-bound, bound, generator);
  }
  at::Tensor Embedding(int64_t vocab, int64_t dim, int64_t pad) {
    at::Tensor t = at::empty({vocab, dim}, options)
                       .normal_(0, 1.0 / std::sqrt(static_cast<double>(dim)), generator);
    t[pad].zero_();
    return t;
  }
  at::Tensor Zeros(int64_t n) { return at::zeros({n}, options); }
};

struct Linear {
  at::Tensor weight, bias;
  Linear() = default;
  Linear(TensorRegistry& r, Init& init, const std::string& name, int64_t in, int64_t out,
         double gain = 1.0)
      : weight(r.Parameter(name + ".weight", init.XavierUniform(out, in, gain))),
        bias(r.Parameter(name + ".bias", init.Zeros(out))) {}
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
};

struct Attention {
  Linear q, k, v, out;
  int64_t heads = 1;
  Attention() = default;
  Attention(TensorRegistry& r, Init& init, const std::string& prefix, int64_t dim, int64_t h)
      : q(r, init, prefix + ".q_proj", dim, dim, 1 / std::sqrt(2.0)),
        k(r, init, prefix + ".k_proj", dim, dim, 1 / std::sqrt(2.0)),
        v(r, init, prefix + ".v_proj", dim, dim, 1 / std::sqrt(2.0)),
        out(r, init, prefix + ".out_proj", dim, dim),
        heads(h) {}

  at::Tensor Split(const at::Tensor& x) const {
    return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
  }
  // query [B, T, D] attends to memory [B, S, D]; mask is additive, broadcastable to
  // [B, H, T, S].
  at::Tensor operator()(const at::Tensor& query, const at::Tensor& memory, const at::Tensor& mask,
                        double attention_dropout, const ForwardMode& mode,
                        const at::Generator& gen) const {
    const int64_t head_dim = query.size(2) / heads;
    const at::Tensor qh = Split(q(query) * (1.0 / std::sqrt(static_cast<double>(head_dim))));
    const at::Tensor kh = Split(k(memory));
    const at::Tensor vh = Split(v(memory));
    at::Tensor scores = at::matmul(qh, kh.transpose(2, 3));
    if (mask.defined()) scores = scores + mask;
    const at::Tensor probs = Dropout(at::softmax(scores, -1), attention_dropout, mode, gen);
    const at::Tensor context = at::matmul(probs, vh).transpose(1, 2).reshape(
        {query.size(0), query.size(1), query.size(2)});
    return out(context);
  }
};

struct FeedForward {
  Linear fc1, fc2;
  bool gelu = false;
  FeedForward() = default;
  FeedForward(TensorRegistry& r, Init& init, const std::string& prefix, const ModelConfig& c)
      : fc1(r, init, prefix + ".fc1", c.embed_dim, c.ffn_dim),
        fc2(r, init, prefix + ".fc2", c.ffn_dim, c.embed_dim),
        gelu(c.activation == Activation::kGELU) {}
  at::Tensor operator()(const at::Tensor& x, double activation_dropout, const ForwardMode& mode,
                        const at::Generator& gen) const {
    const at::Tensor h = fc1(x);
    return fc2(Dropout(gelu ? at::gelu(h) : at::relu(h), activation_dropout, mode, gen));
  }
};

struct EncoderLayer {
  Attention self_attn;
  TrainNorm self_attn_norm, ffn_norm;
  FeedForward ffn;
};

struct DecoderLayer {
  Attention self_attn, cross_attn;
  TrainNorm self_attn_norm, cross_attn_norm, ffn_norm;
  FeedForward ffn;
};

}  // namespace

struct TrainTransformer::Impl {
  ModelConfig config;
  ModelTrainingOptions options;
  at::TensorOptions tensor_options;
  TensorRegistry registry;
  at::Tensor source_table, target_table, output_projection;
  at::Tensor positions;  // fairseq's sinusoidal table, [max_positions + pad + 1, D]
  std::vector<EncoderLayer> encoder;
  std::vector<DecoderLayer> decoder;
  TrainNorm encoder_final, decoder_final;

  at::Tensor Embed(const at::Tensor& table, const at::Tensor& tokens, const ForwardMode& mode,
                   const at::Generator& gen) const {
    const int64_t first = config.special.pad + 1;
    const at::Tensor pos = positions.narrow(0, first, tokens.size(1));
    const double scale = std::sqrt(static_cast<double>(config.embed_dim));
    const at::Tensor x =
        at::embedding(table, tokens, config.special.pad) * scale + pos.unsqueeze(0);
    return Dropout(x, options.dropout, mode, gen);
  }

  // One residual block around `fn`, pre- or post-norm.
  template <typename Fn>
  at::Tensor Residual(const at::Tensor& x, TrainNorm& norm, const at::Tensor& mask,
                      const ForwardMode& mode, const at::Generator& gen, Fn fn) {
    if (config.normalize_before) {
      return x + Dropout(fn(norm.Forward(x, mask, mode)), options.dropout, mode, gen);
    }
    return norm.Forward(x + Dropout(fn(x), options.dropout, mode, gen), mask, mode);
  }
};

namespace {

// The trainer builds fairseq's Transformer; the architecture features of imported models
// (models/io/hf_import.h) are served but not trained.
void CheckTrainable(const ModelConfig& c) {
  const auto refuse = [](const std::string& what) {
    throw std::invalid_argument("the trainer does not train " + what +
                                " (such models are imported and served, not trained here)");
  };
  if (c.activation != Activation::kReLU && c.activation != Activation::kGELU) {
    refuse("activations other than relu and gelu");
  }
  if (c.positions != PositionEncoding::kSinusoidal &&
      c.positions != PositionEncoding::kSinusoidalZeroMean) {
    refuse("positions other than fairseq's sinusoids");
  }
  if (!c.scale_embedding) refuse("unscaled embeddings");
  if (!c.linear_bias) refuse("projections without biases");
  if (c.key_value_heads() != c.attention_heads) refuse("grouped-query attention");
  if (c.special.pad == SpecialTokens::kNone) refuse("a model without <pad>");
  if (c.special.decoder_start != c.special.eos) refuse("a decoder start other than </s>");
  if (c.output_bias || c.stream_dim() != c.embed_dim) refuse("converted models");
}

}  // namespace

TrainTransformer::TrainTransformer(const ModelConfig& c, const ModelTrainingOptions& options,
                                   uint64_t seed, at::ScalarType dtype)
    : impl_(std::make_unique<Impl>()) {
  CheckTrainable(c);
  Impl& m = *impl_;
  m.config = c;
  m.options = options;
  m.tensor_options = at::TensorOptions().dtype(dtype);
  Init init{at::make_generator<at::CPUGeneratorImpl>(seed), m.tensor_options};
  TensorRegistry& r = m.registry;
  const int64_t d = c.embed_dim;
  const auto norm = [&](NormSite site, const std::string& prefix) {
    return TrainNorm(c.norm(site), d, prefix, r, options.norms, m.tensor_options);
  };
  if (c.is_mt()) {
    m.source_table = r.Parameter("encoder.embed_tokens.weight",
                                 init.Embedding(c.source_vocab_size, d, c.special.pad));
    m.target_table = c.share_all_embeddings
                         ? m.source_table
                         : r.Parameter("decoder.embed_tokens.weight",
                                       init.Embedding(c.target_vocab_size, d, c.special.pad));
    for (int64_t i = 0; i < c.encoder_layers; ++i) {
      const std::string p = "encoder.layers." + std::to_string(i);
      EncoderLayer layer;
      layer.self_attn = Attention(r, init, p + ".self_attn", d, c.attention_heads);
      layer.self_attn_norm = norm(NormSite::kEncoderSelfAttn, p + ".self_attn_layer_norm");
      layer.ffn = FeedForward(r, init, p, c);
      layer.ffn_norm = norm(NormSite::kEncoderFfn, p + ".final_layer_norm");
      m.encoder.push_back(std::move(layer));
    }
    if (c.normalize_before) m.encoder_final = norm(NormSite::kFinal, "encoder.layer_norm");
  } else {
    m.target_table = r.Parameter("decoder.embed_tokens.weight",
                                 init.Embedding(c.target_vocab_size, d, c.special.pad));
  }
  for (int64_t i = 0; i < c.decoder_layers; ++i) {
    const std::string p = "decoder.layers." + std::to_string(i);
    DecoderLayer layer;
    layer.self_attn = Attention(r, init, p + ".self_attn", d, c.attention_heads);
    layer.self_attn_norm = norm(NormSite::kDecoderSelfAttn, p + ".self_attn_layer_norm");
    if (c.is_mt()) {
      layer.cross_attn = Attention(r, init, p + ".encoder_attn", d, c.attention_heads);
      layer.cross_attn_norm = norm(NormSite::kDecoderCrossAttn, p + ".encoder_attn_layer_norm");
    }
    layer.ffn = FeedForward(r, init, p, c);
    layer.ffn_norm = norm(NormSite::kDecoderFfn, p + ".final_layer_norm");
    m.decoder.push_back(std::move(layer));
  }
  if (c.normalize_before) m.decoder_final = norm(NormSite::kFinal, "decoder.layer_norm");
  if (c.share_decoder_input_output_embed) {
    m.output_projection = m.target_table;
  } else {
    m.output_projection =
        r.Parameter("decoder.output_projection.weight",
                    at::empty({c.target_vocab_size, d}, m.tensor_options)
                        .normal_(0, 1.0 / std::sqrt(static_cast<double>(d)), init.generator));
  }
  m.positions = SinusoidalTable(c.max_positions + c.special.pad + 1, d, c.special.pad,
                                c.zero_mean_positions())
                    .to(dtype);
}

TrainTransformer::~TrainTransformer() = default;

at::Tensor TrainTransformer::Forward(const Batch& batch, const ForwardMode& mode,
                                     at::Generator gen) {
  Impl& m = *impl_;
  const ModelConfig& c = m.config;
  const double inf = std::numeric_limits<double>::infinity();
  const double attn_p = m.options.attention_dropout;
  const double act_p = m.options.activation_dropout;

  at::Tensor memory, memory_mask;
  if (c.is_mt()) {
    const at::Tensor& src = batch.source;
    TORCH_CHECK(src.defined(), "a transformer_mt batch needs source tokens");
    const at::Tensor padding = src.eq(c.special.pad);
    const at::Tensor token_mask = padding.logical_not();
    memory_mask = at::zeros(padding.sizes(), m.tensor_options)
                      .masked_fill(padding, -inf)
                      .view({src.size(0), 1, 1, src.size(1)});
    at::Tensor x = m.Embed(m.source_table, src, mode, gen);
    for (EncoderLayer& layer : m.encoder) {
      x = m.Residual(x, layer.self_attn_norm, token_mask, mode, gen, [&](const at::Tensor& h) {
        return layer.self_attn(h, h, memory_mask, attn_p, mode, gen);
      });
      x = m.Residual(x, layer.ffn_norm, token_mask, mode, gen,
                     [&](const at::Tensor& h) { return layer.ffn(h, act_p, mode, gen); });
    }
    if (c.normalize_before) x = m.encoder_final.Forward(x, token_mask, mode);
    memory = x;
  }

  const at::Tensor& prev = batch.prev_output;
  const int64_t t = prev.size(1);
  const at::Tensor token_mask = prev.ne(c.special.pad);
  const at::Tensor causal = at::full({t, t}, -inf, m.tensor_options).triu(1);
  at::Tensor x = m.Embed(m.target_table, prev, mode, gen);
  for (DecoderLayer& layer : m.decoder) {
    x = m.Residual(x, layer.self_attn_norm, token_mask, mode, gen, [&](const at::Tensor& h) {
      return layer.self_attn(h, h, causal, attn_p, mode, gen);
    });
    if (c.is_mt()) {
      x = m.Residual(x, layer.cross_attn_norm, token_mask, mode, gen, [&](const at::Tensor& h) {
        return layer.cross_attn(h, memory, memory_mask, attn_p, mode, gen);
      });
    }
    x = m.Residual(x, layer.ffn_norm, token_mask, mode, gen,
                   [&](const at::Tensor& h) { return layer.ffn(h, act_p, mode, gen); });
  }
  if (c.normalize_before) x = m.decoder_final.Forward(x, token_mask, mode);
  return at::linear(x, m.output_projection);
}

const std::vector<std::pair<std::string, at::Tensor>>& TrainTransformer::parameters() const {
  return impl_->registry.parameters;
}

std::map<std::string, at::Tensor> TrainTransformer::State() const {
  std::map<std::string, at::Tensor> state = impl_->registry.buffers;
  for (const auto& [name, p] : impl_->registry.parameters) state[name] = p;
  return state;
}

void TrainTransformer::LoadState(const std::map<std::string, at::Tensor>& state) {
  const std::map<std::string, at::Tensor> mine = State();
  for (const auto& [name, t] : state) {
    if (!mine.count(name))
      throw std::runtime_error("checkpoint tensor '" + name + "' is not in this model");
  }
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : mine) {
    const auto it = state.find(name);
    if (it == state.end()) throw std::runtime_error("checkpoint lacks tensor '" + name + "'");
    if (it->second.sizes() != t.sizes()) {
      throw std::runtime_error("checkpoint tensor '" + name + "' has shape " +
                               c10::str(it->second.sizes()) + ", the model " + c10::str(t.sizes()));
    }
    t.copy_(it->second);
  }
}

std::map<std::string, at::Tensor> TrainTransformer::ExportTensors() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, p] : impl_->registry.parameters) out[name] = p.detach().clone();
  for (const std::string& name : impl_->registry.exported_buffers) {
    out[name] = impl_->registry.buffers.at(name).detach().clone();
  }
  return out;
}

const ModelConfig& TrainTransformer::config() const { return impl_->config; }

int64_t TrainTransformer::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, p] : impl_->registry.parameters) n += p.numel();
  return n;
}

LossSums LabelSmoothedLoss(const at::Tensor& logits, const at::Tensor& target, int64_t pad,
                           double smoothing) {
  const at::Tensor lprobs = at::log_softmax(logits, -1);
  const at::Tensor real = target.ne(pad);
  const at::Tensor nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1);
  const at::Tensor nll_sum = nll.masked_fill(real.logical_not(), 0).sum();
  if (smoothing <= 0) return {nll_sum, nll_sum.detach()};
  const auto vocab = static_cast<double>(logits.size(-1));
  const double eps_i = smoothing / (vocab - 1);
  const at::Tensor smooth_sum = (-lprobs.sum(-1)).masked_fill(real.logical_not(), 0).sum();
  const at::Tensor loss = nll_sum * (1.0 - smoothing - eps_i) + smooth_sum * eps_i;
  return {loss, nll_sum.detach()};
}

std::vector<std::vector<double>> TargetLogProbs(const at::Tensor& logits, const Batch& batch,
                                                int64_t pad) {
  const at::Tensor picked = at::log_softmax(logits.detach().to(at::kDouble), -1)
                                .gather(-1, batch.target.unsqueeze(-1))
                                .squeeze(-1);
  const at::Tensor lengths = batch.target.ne(pad).sum(1);
  std::vector<std::vector<double>> out(static_cast<size_t>(batch.target.size(0)));
  const auto a = picked.accessor<double, 2>();
  const auto len = lengths.accessor<int64_t, 1>();
  for (int64_t i = 0; i < batch.target.size(0); ++i) {
    for (int64_t j = 0; j < len[i]; ++j) out[i].push_back(a[i][j]);
  }
  return out;
}

}  // namespace normserve::train
