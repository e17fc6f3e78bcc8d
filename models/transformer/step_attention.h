// Attention of one new position per row against keys and values kept in cache slots: the
// decoding step of the step engine (decoding/step_engine.h). Rows of one step may sit at
// different positions and attend to sources of different lengths, so there is neither
// padding nor a mask: each row attends to exactly its own keys.
//
// One dispatching file (this one's .cc: ATen ops on any device) plus one file per device
// with its own kernel (step_attention_cpu.cc: fp32 loops over (row, head), no ATen call
// per row).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace normserve {

// Per row of a step, on the host.
struct StepRows {
  std::vector<int64_t> slot;           // self-attention cache slot
  std::vector<int64_t> position;       // 0-based position of the new token = keys cached
  std::vector<int64_t> source;         // cross-attention slot (transformer_mt)
  std::vector<int64_t> source_length;  // its keys
  int64_t size() const { return static_cast<int64_t>(slot.size()); }
};

// qkv [R, H*Dh + 2*KVH*Dh]: each row's query (already scaled by 1/sqrt(head_dim)), key and
// value, with kv_heads key/value heads each serving heads / kv_heads query heads in a row
// (grouped-query attention; kv_heads == heads is plain multi-head). Writes the key and value
// of row r at position[r] of slot[r] in keys/values [slots, KVH, T, Dh], then attends over
// positions 0..position[r]. Returns the context [R, H*Dh].
at::Tensor StepSelfAttention(const at::Tensor& qkv, at::Tensor& keys, at::Tensor& values,
                             const StepRows& rows, int64_t heads, int64_t kv_heads);

// query [R, D] (scaled) attends over the first source_length[r] keys of slot source[r] in
// keys/values [sources, H, S, Dh]. Returns the context [R, D].
at::Tensor StepCrossAttention(const at::Tensor& query, const at::Tensor& keys,
                              const at::Tensor& values, const StepRows& rows, int64_t heads);

// The reference of both on ATen ops (any device, any floating type): what the dispatcher
// runs where no device kernel applies, and what tests compare the kernels with.
at::Tensor StepSelfAttentionReference(const at::Tensor& qkv, at::Tensor& keys, at::Tensor& values,
                                      const StepRows& rows, int64_t heads, int64_t kv_heads);
at::Tensor StepCrossAttentionReference(const at::Tensor& query, const at::Tensor& keys,
                                       const at::Tensor& values, const StepRows& rows,
                                       int64_t heads);

namespace cpu {
// The fp32 CPU kernels (step_attention_cpu.cc); contiguous tensors only.
void StepSelfAttention(const float* qkv, int64_t rows, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, float* keys, float* values, int64_t capacity,
                       const int64_t* slot, const int64_t* position, float* out);
void StepCrossAttention(const float* query, int64_t rows, int64_t heads, int64_t head_dim,
                        const float* keys, const float* values, int64_t capacity,
                        const int64_t* source, const int64_t* source_length, float* out);
}  // namespace cpu

}  // namespace normserve
