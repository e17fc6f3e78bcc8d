#include "models/transformer/transformer.h"

#include <ATen/ATen.h>

#include <functional>
#include <limits>
#include <optional>

#include "models/io/weight_store.h"
#include "models/norm/norm.h"
#include "models/norm/norm_timing.h"
#include "models/transformer/decoder_slots.h"
#include "models/transformer/embedding.h"
#include "models/transformer/step_attention.h"

namespace normserve {
namespace {

// fc2(act(fc1(x))), or with SwiGLU fc2(silu(fc_gate(x)) * fc1(x)) (Llama's gate_proj, up_proj
// and down_proj), the gate and fc1 in one matrix product.
class FeedForward {
 public:
  FeedForward() = default;
  FeedForward(const ModelConfig& c, WeightStore& store, const std::string& prefix)
      : activation_(c.activation) {
    const int64_t d = c.stream_dim(), f = c.ffn_dim;
    w1_ = store.Take(prefix + ".fc1.weight", {f, d});
    if (activation_ == Activation::kSwiGLU) {
      w1_ = at::cat({store.Take(prefix + ".fc_gate.weight", {f, d}), w1_});
    }
    w2_ = store.Take(prefix + ".fc2.weight", {d, f});
    if (c.linear_bias) {
      if (activation_ == Activation::kSwiGLU) {
        b1_ = at::cat(
            {store.Take(prefix + ".fc_gate.bias", {f}), store.Take(prefix + ".fc1.bias", {f})});
      } else {
        b1_ = store.Take(prefix + ".fc1.bias", {f});
      }
      b2_ = store.Take(prefix + ".fc2.bias", {d});
    }
  }

  at::Tensor operator()(const at::Tensor& x) const {
    const at::Tensor h = at::linear(x, w1_, b1_);
    switch (activation_) {
      case Activation::kReLU:
        return at::linear(at::relu(h), w2_, b2_);
      case Activation::kGELU:
        return at::linear(at::gelu(h), w2_, b2_);
      case Activation::kSiLU:
        return at::linear(at::silu(h), w2_, b2_);
      case Activation::kSwiGLU: {
        const auto gate_and_up = h.chunk(2, -1);
        return at::linear(at::silu(gate_and_up[0]) * gate_and_up[1], w2_, b2_);
      }
    }
    return h;
  }
  void To(const at::Device& d) {
    for (at::Tensor* t : {&w1_, &b1_, &w2_, &b2_}) {
      if (t->defined()) *t = t->to(d);
    }
  }

 private:
  Activation activation_ = Activation::kReLU;
  at::Tensor w1_, b1_, w2_, b2_;
};

// One residual block: out = fn(normalized or raw input), added back to the stream.
struct Sublayer {
  const Norm* norm;
  std::function<at::Tensor(const at::Tensor&)> fn;
};

// Runs residual blocks over the stream x (which it updates in place). Pre-norm normalizes
// each block's input and ends with the final norm; post-norm normalizes after each add. Every
// add that precedes a norm goes through the fused add-and-normalize.
at::Tensor RunSublayers(at::Tensor x, const std::vector<Sublayer>& blocks, const Norm* final_norm,
                        bool pre_norm) {
  if (pre_norm) {
    at::Tensor h = (*blocks.front().norm)(x);
    for (size_t k = 0; k < blocks.size(); ++k) {
      const at::Tensor out = blocks[k].fn(h);
      const Norm* next = k + 1 < blocks.size() ? blocks[k + 1].norm : final_norm;
      h = next->AddAndNormalize(out, x);
    }
    return h;
  }
  for (const Sublayer& block : blocks) {
    const at::Tensor out = block.fn(x);
    x = block.norm->AddAndNormalize(out, x);
  }
  return x;
}

struct EncoderLayer {
  MultiheadAttention self_attn;
  Norm self_attn_norm, ffn_norm;
  FeedForward ffn;
};

struct DecoderLayer {
  MultiheadAttention self_attn, cross_attn;
  Norm self_attn_norm, cross_attn_norm, ffn_norm;
  FeedForward ffn;
};

at::Tensor CausalMask(int64_t new_steps, int64_t past_steps, const at::TensorOptions& options) {
  // Row i (absolute step past+i) sees keys 0..past+i.
  return at::full({new_steps, past_steps + new_steps}, -std::numeric_limits<float>::infinity(),
                  options)
      .triu(past_steps + 1);
}

}  // namespace

struct Transformer::Layers {
  RotaryEmbedding rotary;  // a rotary model's, shared by its self-attention layers
  TokenEmbedding source_embedding, target_embedding;
  std::vector<EncoderLayer> encoder;
  std::vector<DecoderLayer> decoder;
  Norm encoder_final, decoder_final;
  at::Tensor output_projection;  // [V, stream_dim]
  at::Tensor output_bias;        // [V], or undefined (config.output_bias)
};

EncoderOutput EncoderOutput::Expand(int64_t times) const {
  return {states.repeat_interleave(times, 0), memory_mask.repeat_interleave(times, 0)};
}

void DecoderState::Reorder(const at::Tensor& index) {
  // Rows only move among the beams of one sentence, which share the encoder memory and so
  // the cross-attention keys and values: only the self-attention caches change.
  for (KVCache& c : self_attention) c.Reorder(index);
}

Transformer::Transformer(const ModelConfig& c, WeightStore& store)
    : config_(c), layers_(std::make_unique<Layers>()) {
  // The residual stream has d channels, attention heads * head_dim (d - 1 and d in
  // Pre-CRMSNorm).
  const int64_t d = c.stream_dim();
  auto& L = *layers_;
  const auto layer_norm = [&](NormSite site, const std::string& prefix) {
    return Norm(c.norm(site), d, store, prefix);
  };
  if (c.positions == PositionEncoding::kRotary) {
    L.rotary = RotaryEmbedding(c.head_dim(), c.rope_theta, c.max_positions);
  }
  const MultiheadAttention::Shape shape{d, c.attention_heads, c.key_value_heads(), c.head_dim(),
                                        c.linear_bias};
  const auto attention = [&](const std::string& prefix) {
    return MultiheadAttention(shape, store, prefix);
  };
  const auto embedding = [&](const at::Tensor& table) { return TokenEmbedding(table, c); };
  at::Tensor target_table;
  if (c.is_mt()) {
    const at::Tensor source_table =
        store.Take("encoder.embed_tokens.weight", {c.source_vocab_size, d});
    L.source_embedding = embedding(source_table);
    target_table = c.share_all_embeddings
                       ? source_table
                       : store.Take("decoder.embed_tokens.weight", {c.target_vocab_size, d});
    for (int64_t i = 0; i < c.encoder_layers; ++i) {
      const std::string p = "encoder.layers." + std::to_string(i);
      L.encoder.push_back({attention(p + ".self_attn"),
                           layer_norm(NormSite::kEncoderSelfAttn, p + ".self_attn_layer_norm"),
                           layer_norm(NormSite::kEncoderFfn, p + ".final_layer_norm"),
                           FeedForward(c, store, p)});
    }
    if (c.normalize_before) L.encoder_final = layer_norm(NormSite::kFinal, "encoder.layer_norm");
  } else {
    target_table = store.Take("decoder.embed_tokens.weight", {c.target_vocab_size, d});
  }
  L.target_embedding = embedding(target_table);
  for (int64_t i = 0; i < c.decoder_layers; ++i) {
    const std::string p = "decoder.layers." + std::to_string(i);
    DecoderLayer layer;
    layer.self_attn = attention(p + ".self_attn");
    layer.self_attn_norm = layer_norm(NormSite::kDecoderSelfAttn, p + ".self_attn_layer_norm");
    if (c.is_mt()) {
      layer.cross_attn = attention(p + ".encoder_attn");
      layer.cross_attn_norm =
          layer_norm(NormSite::kDecoderCrossAttn, p + ".encoder_attn_layer_norm");
    }
    layer.ffn = FeedForward(c, store, p);
    layer.ffn_norm = layer_norm(NormSite::kDecoderFfn, p + ".final_layer_norm");
    L.decoder.push_back(std::move(layer));
  }
  if (c.normalize_before) L.decoder_final = layer_norm(NormSite::kFinal, "decoder.layer_norm");
  L.output_projection =
      c.share_decoder_input_output_embed
          ? target_table
          : store.Take("decoder.output_projection.weight", {c.target_vocab_size, d});
  if (c.output_bias) {
    L.output_bias = store.Take("decoder.output_projection.bias", {c.target_vocab_size});
  }
  store.CheckAllTaken();
  parameters_ = store.TakenElements();
}

Transformer::~Transformer() = default;
Transformer::Transformer(Transformer&&) noexcept = default;

EncoderOutput Transformer::Encode(const at::Tensor& tokens) const {
  const NormForwardTiming norm_timing;  // samples the norm layers' time (norm_timing.h)
  const auto& L = *layers_;
  const at::Tensor padding = tokens.eq(config_.special.padding());
  const at::Tensor mask = at::zeros(padding.sizes(), L.source_embedding.table().options())
                              .masked_fill(padding, -std::numeric_limits<float>::infinity())
                              .view({tokens.size(0), 1, 1, tokens.size(1)});
  std::vector<Sublayer> blocks;
  for (const EncoderLayer& layer : L.encoder) {
    blocks.push_back({&layer.self_attn_norm, [&layer, &mask](const at::Tensor& h) {
                        return layer.self_attn.SelfAttention(h, mask, nullptr);
                      }});
    blocks.push_back({&layer.ffn_norm, [&layer](const at::Tensor& h) { return layer.ffn(h); }});
  }
  const at::Tensor states = RunSublayers(L.source_embedding(tokens, 0), blocks, &L.encoder_final,
                                         config_.normalize_before);
  return {states, mask};
}

DecoderState Transformer::StartDecoding(EncoderOutput memory, int64_t batch) const {
  DecoderState state;
  state.self_attention.resize(layers_->decoder.size());
  if (config_.is_mt()) {
    TORCH_CHECK(memory.states.size(0) == batch, "encoder output batch mismatch");
    state.cross_attention.resize(layers_->decoder.size());
    state.memory = std::move(memory);
  }
  return state;
}

at::Tensor Transformer::Decode(const at::Tensor& tokens, DecoderState& state) const {
  const NormForwardTiming norm_timing;  // samples the norm layers' time (norm_timing.h)
  const auto& L = *layers_;
  const int64_t new_steps = tokens.size(1);
  if (state.steps + new_steps > config_.max_positions) {
    throw std::out_of_range("decoding past max_positions " + std::to_string(config_.max_positions));
  }
  const at::Tensor x = L.target_embedding(tokens, state.steps);
  const at::Tensor causal =
      new_steps > 1 ? CausalMask(new_steps, state.steps, x.options()) : at::Tensor();
  // Looked up once for every layer of this forward.
  const std::optional<RotaryAngles> angles =
      L.rotary.enabled() ? std::optional(L.rotary.FromPosition(state.steps, new_steps))
                         : std::nullopt;
  const RotaryAngles* rotary = angles ? &*angles : nullptr;
  std::vector<Sublayer> blocks;
  for (size_t i = 0; i < L.decoder.size(); ++i) {
    const DecoderLayer& layer = L.decoder[i];
    KVCache* self_cache = &state.self_attention[i];
    blocks.push_back(
        {&layer.self_attn_norm, [&layer, &causal, self_cache, rotary](const at::Tensor& h) {
           return layer.self_attn.SelfAttention(h, causal, self_cache, rotary);
         }});
    if (config_.is_mt()) {
      KVCache* cross_cache = &state.cross_attention[i];
      blocks.push_back({&layer.cross_attn_norm, [&layer, &state, cross_cache](const at::Tensor& h) {
                          return layer.cross_attn.CrossAttention(
                              h, state.memory.states, state.memory.memory_mask, *cross_cache);
                        }});
    }
    blocks.push_back({&layer.ffn_norm, [&layer](const at::Tensor& h) { return layer.ffn(h); }});
  }
  const at::Tensor h = RunSublayers(x, blocks, &L.decoder_final, config_.normalize_before);
  state.steps += new_steps;
  return at::linear(h, L.output_projection, L.output_bias).to(at::kFloat);
}

DecoderSlots Transformer::MakeSlots() const {
  const ModelConfig& c = config_;
  return DecoderSlots(c.decoder_layers, c.key_value_heads(), c.head_dim(), c.is_mt(),
                      c.max_positions, layers_->output_projection.options());
}

void Transformer::EncodeIntoSlots(const at::Tensor& tokens, const std::vector<int64_t>& sources,
                                  DecoderSlots& slots) const {
  const EncoderOutput memory = Encode(tokens);
  const at::Tensor index = at::tensor(sources, at::kLong).to(device_);
  const int64_t length = tokens.size(1);
  for (size_t i = 0; i < layers_->decoder.size(); ++i) {
    const auto [keys, values] = layers_->decoder[i].cross_attn.MemoryKeysValues(memory.states);
    slots.cross_keys[i].narrow(2, 0, length).index_copy_(0, index, keys);
    slots.cross_values[i].narrow(2, 0, length).index_copy_(0, index, values);
  }
}

at::Tensor Transformer::PrefillIntoSlots(const at::Tensor& tokens,
                                         const std::vector<int64_t>& lengths,
                                         const std::vector<int64_t>& rows,
                                         DecoderSlots& slots) const {
  DecoderState state = StartDecoding(EncoderOutput{}, tokens.size(0));
  const at::Tensor logits = Decode(tokens, state);
  const int64_t steps = tokens.size(1);
  slots.ReserveSteps(steps);
  const at::Tensor index = at::tensor(rows, at::kLong).to(device_);
  for (size_t i = 0; i < state.self_attention.size(); ++i) {
    // Positions past a prompt's length hold its padding's keys: the row overwrites them
    // before it attends to them.
    slots.self_keys[i].narrow(2, 0, steps).index_copy_(0, index, state.self_attention[i].keys);
    slots.self_values[i].narrow(2, 0, steps).index_copy_(0, index, state.self_attention[i].values);
  }
  const at::Tensor last = at::tensor(lengths, at::kLong).to(device_) - 1;
  return logits.gather(1, last.view({-1, 1, 1}).expand({-1, 1, logits.size(2)})).squeeze(1);
}

at::Tensor Transformer::Step(const at::Tensor& tokens, const StepRows& rows,
                             DecoderSlots& slots) const {
  const NormForwardTiming norm_timing;  // samples the norm layers' time (norm_timing.h)
  const auto& L = *layers_;
  const at::Tensor positions = at::tensor(rows.position, at::kLong).to(device_);
  const at::Tensor x = L.target_embedding.AtPositions(tokens, positions);
  const std::optional<RotaryAngles> angles =
      L.rotary.enabled() ? std::optional(L.rotary.AtPositions(positions)) : std::nullopt;
  const RotaryAngles* rotary = angles ? &*angles : nullptr;
  std::vector<Sublayer> blocks;
  for (size_t i = 0; i < L.decoder.size(); ++i) {
    const DecoderLayer& layer = L.decoder[i];
    blocks.push_back({&layer.self_attn_norm, [&, i](const at::Tensor& h) {
                        return layer.self_attn.StepSelfAttention(
                            h, slots.self_keys[i], slots.self_values[i], rows, rotary);
                      }});
    if (config_.is_mt()) {
      blocks.push_back({&layer.cross_attn_norm, [&, i](const at::Tensor& h) {
                          return layer.cross_attn.StepCrossAttention(h, slots.cross_keys[i],
                                                                     slots.cross_values[i], rows);
                        }});
    }
    blocks.push_back({&layer.ffn_norm, [&layer](const at::Tensor& h) { return layer.ffn(h); }});
  }
  const at::Tensor h = RunSublayers(x, blocks, &L.decoder_final, config_.normalize_before);
  return at::linear(h, L.output_projection, L.output_bias).to(at::kFloat);
}

void Transformer::To(const at::Device& device) {
  device_ = device;
  auto& L = *layers_;
  L.rotary.To(device);
  L.source_embedding.To(device);
  L.target_embedding.To(device);
  for (EncoderLayer& l : L.encoder) {
    l.self_attn.To(device);
    l.self_attn_norm.To(device);
    l.ffn_norm.To(device);
    l.ffn.To(device);
  }
  for (DecoderLayer& l : L.decoder) {
    l.self_attn.To(device);
    l.cross_attn.To(device);
    l.self_attn_norm.To(device);
    l.cross_attn_norm.To(device);
    l.ffn_norm.To(device);
    l.ffn.To(device);
  }
  L.encoder_final.To(device);
  L.decoder_final.To(device);
  L.output_projection = L.output_projection.to(device);
  if (L.output_bias.defined()) L.output_bias = L.output_bias.to(device);
}

}  // namespace normserve
