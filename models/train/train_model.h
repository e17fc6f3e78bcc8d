// transformer_mt and transformer_lm for training: parameters that autograd tracks, dropout,
// and the training-time norms (train_norm.h), under fairseq's weight names so that the
// exported tensors load into the inference Transformer unchanged. Kept apart from the
// inference path (models/transformer), which runs fused kernels without autograd; the
// eval-mode forward here computes the same function as the served model.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/io/model_config.h"
#include "models/train/train_norm.h"

namespace normserve::train {

struct ModelTrainingOptions {
  double dropout = 0.1;             // after embeddings and every sublayer, before the residual add
  double attention_dropout = 0.0;   // on the attention probabilities
  double activation_dropout = 0.0;  // after the FFN's activation
  NormTrainingOptions norms;
};

// One batch as the model sees it. Sequences are right-padded with the pad id.
struct Batch {
  at::Tensor source;       // [B, S] source ids + </s> (transformer_mt); undefined for an LM
  at::Tensor prev_output;  // [B, T] </s> + target ids: the decoder input
  at::Tensor target;       // [B, T] target ids + </s>: what the decoder predicts
  int64_t sentences = 0;
  int64_t target_tokens = 0;  // non-pad entries of `target`
  int64_t source_tokens = 0;  // non-pad entries of `source`
};

class TrainTransformer {
 public:
  // Parameters in `dtype`, initialized from `seed` as fairseq does: Xavier-uniform matrices
  // (q/k/v with gain 1/sqrt(2)), N(0, d^-1/2) embeddings with a zero padding row, zero
  // biases, unit norm gains.
  TrainTransformer(const ModelConfig& config, const ModelTrainingOptions& options, uint64_t seed,
                   at::ScalarType dtype = at::kFloat);
  ~TrainTransformer();
  TrainTransformer(const TrainTransformer&) = delete;
  TrainTransformer& operator=(const TrainTransformer&) = delete;

  // Logits [B, T, V] of the batch's decoder positions. In training, dropout draws from
  // `generator` and BatchNorm/PowerNorm use and update batch statistics.
  at::Tensor Forward(const Batch& batch, const ForwardMode& mode, at::Generator generator = {});

  // Trainable parameters by fairseq name, in a fixed order (a shared table appears once).
  const std::vector<std::pair<std::string, at::Tensor>>& parameters() const;
  // Every tensor of the training state: parameters and buffers (running statistics,
  // PowerNorm's nu), by name.
  std::map<std::string, at::Tensor> State() const;
  // Copies a State() into this model's tensors; throws std::runtime_error naming a missing,
  // extra or misshapen tensor.
  void LoadState(const std::map<std::string, at::Tensor>& state);
  // The tensors model.safetensors holds: parameters and the running statistics the served
  // norms fold (running_mean, running_var, running_phi), detached, on the CPU.
  std::map<std::string, at::Tensor> ExportTensors() const;

  const ModelConfig& config() const;
  int64_t parameter_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sums over the batch's non-pad target positions of fairseq's label-smoothed cross entropy,
// (1 - eps - eps/(V-1)) * nll + eps/(V-1) * sum over the vocabulary of -log p, and of the
// plain negative log-likelihood (nats).
struct LossSums {
  at::Tensor loss;  // scalar, differentiable
  at::Tensor nll;   // scalar
};
LossSums LabelSmoothedLoss(const at::Tensor& logits, const at::Tensor& target, int64_t pad,
                           double smoothing);

// Per-token log-probabilities of each sentence's targets ([B][target length]), for checks
// against the served model.
std::vector<std::vector<double>> TargetLogProbs(const at::Tensor& logits, const Batch& batch,
                                                int64_t pad);

}  // namespace normserve::train
