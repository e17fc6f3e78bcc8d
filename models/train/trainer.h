// normserve-train's engine: tokenizers, data, the training loop (Adam, inverse-sqrt warm-up,
// label smoothing, dropout, clipping), validation, checkpoints that resume exactly, averaging
// and the export of a servable model directory. The CLI (models/tools/normserve_train.cc)
// only parses flags into TrainerOptions.
#pragma once

#include <cstdint>
#include <string>

#include "models/train/optim.h"
#include "models/train/powernorm.h"

namespace normserve::train {

struct TrainerOptions {
  std::string config_path;  // config.json: architecture, sizes, norms (vocab sizes filled in)
  // transformer_mt: parallel files, one sentence per line.
  std::string train_source, train_target, valid_source, valid_target;
  // transformer_lm: one text per line.
  std::string train_text, valid_text;

  std::string out_dir;         // the model directory written at the end
  std::string checkpoint_dir;  // default <out_dir>/checkpoints
  std::string log_file;        // default <out_dir>/train.log (appended)

  // SentencePiece models to use; when empty they are trained on the training split with
  // vocab_size pieces (a joint one for share_all_embeddings).
  std::string source_spm, target_spm;  // an LM's is target_spm
  int vocab_size = 8000;

  int64_t max_tokens = 4096;  // padded tokens per batch
  int64_t steps = 10000;      // total updates (a resumed run continues up to this)
  int64_t warmup = 4000;      // learning-rate warm-up updates
  double lr = 5e-4;           // peak learning rate
  double dropout = 0.1;
  double attention_dropout = 0.0;
  double activation_dropout = 0.0;
  double label_smoothing = 0.1;
  double clip = 0.0;  // gradient-norm clipping; 0 = off
  AdamOptions adam;
  // PowerNorm: warm-up passes (-1: the learning-rate warm-up) and the two averaging factors.
  int64_t powernorm_warmup = -1;
  double powernorm_alpha_forward = 0.9;
  double powernorm_alpha_backward = 0.9;

  int64_t save_every = 1000;
  int64_t validate_every = 1000;
  int64_t log_every = 100;   // log-file lines (and stderr lines when it is not a terminal)
  int64_t average_last = 1;  // export the mean of the last N checkpoints
  int64_t keep_last = 5;     // checkpoints kept on disk (at least average_last)
  std::string resume;        // a checkpoint to continue from, or "last"
  // A checkpoint whose weights (and norm statistics) start a new run: fine-tuning on other
  // data with a fresh optimizer, schedule and data order. Ignored when resuming.
  std::string init_from;
  bool fp16 = false;  // model.safetensors in F16
  int threads = 0;    // ATen intra-op threads; 0 = all cores
  uint64_t seed = 1;
  bool progress = true;  // the updating progress line on stderr

  int64_t check_sentences = 32;  // validation sentences the export check scores
  std::string score_out;         // JSON lines: texts and the exported model's per-token log-probs
  int64_t score_sentences = 8;
};

struct TrainSummary {
  int64_t steps = 0;
  double train_loss = 0;  // label-smoothed loss per target token, last log window (nats)
  double train_nll = 0;   // NLL per target token, last log window (nats)
  double valid_nll = 0;   // of the exported model (nats per token)
  double valid_perplexity = 0;
  double tokens_per_second = 0;  // target tokens, this run's training time
  double export_max_logprob_diff = 0;
  std::string last_checkpoint;
  bool interrupted = false;  // RequestStop() ended the run: checkpoint saved, nothing exported
};

class Trainer {
 public:
  explicit Trainer(TrainerOptions options);
  // Throws std::exception with a message that says what to fix.
  TrainSummary Run();

 private:
  TrainerOptions options_;
};

// Asks a running Trainer to stop after the current update and save a checkpoint
// (async-signal-safe: SIGINT/SIGTERM handlers call it).
void RequestStop();

}  // namespace normserve::train
