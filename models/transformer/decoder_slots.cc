#include "models/transformer/decoder_slots.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

namespace normserve {
namespace {

constexpr int64_t kFirstRows = 16;
constexpr int64_t kFirstSteps = 32;

}  // namespace

DecoderSlots::DecoderSlots(int64_t layers, int64_t heads, int64_t head_dim, bool cross_attention,
                           int64_t max_steps, at::TensorOptions options)
    : heads_(heads),
      head_dim_(head_dim),
      max_steps_(max_steps),
      cross_(cross_attention),
      options_(options) {
  const auto empty = [&](int64_t count) {
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(at::empty({0, heads, 0, head_dim}, options));
    return out;
  };
  self_keys = empty(layers);
  self_values = empty(layers);
  cross_keys = empty(cross_attention ? layers : 0);
  cross_values = empty(cross_attention ? layers : 0);
}

void DecoderSlots::Grow(std::vector<at::Tensor>& buffers, int64_t dim, int64_t size) {
  for (at::Tensor& t : buffers) {
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    const int64_t old = shape[dim];
    shape[dim] = size;
    at::Tensor grown = at::zeros(shape, t.options());
    if (old > 0 && t.numel() > 0) grown.narrow(dim, 0, old).copy_(t);
    t = grown;
  }
}

int64_t DecoderSlots::Take(std::vector<at::Tensor>& keys, std::vector<at::Tensor>& values,
                           int64_t& capacity, std::vector<int64_t>& free) {
  if (free.empty()) {
    const int64_t grown = std::max(kFirstRows, 2 * capacity);
    Grow(keys, 0, grown);
    Grow(values, 0, grown);
    for (int64_t s = grown - 1; s >= capacity; --s) free.push_back(s);
    capacity = grown;
  }
  const int64_t slot = free.back();
  free.pop_back();
  return slot;
}

int64_t DecoderSlots::AcquireRow() {
  ReserveSteps(kFirstSteps);
  return Take(self_keys, self_values, row_capacity_, free_rows_);
}

void DecoderSlots::ReleaseRow(int64_t slot) { free_rows_.push_back(slot); }

int64_t DecoderSlots::AcquireSource(int64_t length) {
  if (length > source_length_capacity_) {
    source_length_capacity_ = std::max(length, 2 * source_length_capacity_);
    Grow(cross_keys, 2, source_length_capacity_);
    Grow(cross_values, 2, source_length_capacity_);
  }
  return Take(cross_keys, cross_values, source_capacity_, free_sources_);
}

void DecoderSlots::ReleaseSource(int64_t source) { free_sources_.push_back(source); }

void DecoderSlots::ReserveSteps(int64_t steps) {
  if (steps <= step_capacity_) return;
  step_capacity_ = std::min(std::max({steps, kFirstSteps, 2 * step_capacity_}), max_steps_);
  Grow(self_keys, 2, step_capacity_);
  Grow(self_values, 2, step_capacity_);
}

void DecoderSlots::CopyRows(const std::vector<Copy>& copies) {
  if (copies.empty()) return;
  for (std::vector<at::Tensor>* buffers : {&self_keys, &self_values}) {
    for (at::Tensor& t : *buffers) {
      if (t.device().is_cpu() && t.is_contiguous()) {
        // One memcpy per head, without an ATen call per copy.
        auto* base = static_cast<char*>(t.data_ptr());
        const int64_t element = t.element_size();
        const int64_t head_stride = t.size(2) * head_dim_ * element;
        for (const Copy& c : copies) {
          for (int64_t h = 0; h < heads_; ++h) {
            std::memcpy(base + (c.to * heads_ + h) * head_stride,
                        base + (c.from * heads_ + h) * head_stride, c.steps * head_dim_ * element);
          }
        }
      } else {
        for (const Copy& c : copies) {
          t[c.to].narrow(1, 0, c.steps).copy_(t[c.from].narrow(1, 0, c.steps));
        }
      }
    }
  }
}

}  // namespace normserve
