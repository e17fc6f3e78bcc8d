// normserve-train: trains transformer_mt / transformer_lm models with any norm per site and
// writes a model directory that normserved serves unchanged (models/train/trainer.h).
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "models/compute.h"
#include "models/train/trainer.h"

namespace {

constexpr char kUsage[] =
    R"(usage: normserve-train --config CONFIG.json --out DIR
         (transformer_mt) --train-source F --train-target F [--valid-source F --valid-target F]
         (transformer_lm) --train-text F [--valid-text F]
         [--max-tokens N] [--steps N] [--warmup N] [--lr X] [--dropout X]
         [--attention-dropout X] [--activation-dropout X] [--label-smoothing X] [--clip X]
         [--weight-decay X] [--adam-betas B1,B2] [--adam-eps X]
         [--powernorm-warmup N] [--powernorm-alpha-fwd X] [--powernorm-alpha-bwd X]
         [--save-every N] [--validate-every N] [--log-every N] [--average-last N]
         [--keep-last N] [--resume CKPT|last] [--init-from CKPT] [--fp16] [--threads N]
         [--seed N]
         [--vocab-size N] [--source-spm F] [--target-spm F] [--spm F]
         [--checkpoint-dir DIR] [--log-file F] [--no-progress]
         [--score-out F] [--score-sentences N]

Trains the architecture and norms of CONFIG.json (the config.json vocabulary that normserved
reads; vocabulary sizes and tokenizer names are filled in) on text files with one sentence
per line, and writes DIR/config.json, DIR/model.safetensors and the SentencePiece model(s):
a model directory that normserved loads unchanged. Copy those files into
<repository>/<model>/<version>/ to serve them.

Defaults: --max-tokens 4096 --steps 10000 --warmup 4000 --lr 5e-4 --dropout 0.1
--label-smoothing 0.1 --clip 0 (off) --adam-betas 0.9,0.98 --adam-eps 1e-8
--save-every 1000 --validate-every 1000 --log-every 100 --average-last 1 --keep-last 5
--vocab-size 8000 --seed 1 --threads (all cores). PowerNorm: --powernorm-warmup defaults to
--warmup, both alphas to 0.9.

Tokenizers: --source-spm/--target-spm (--spm for an LM) use existing SentencePiece models;
otherwise they are trained on the training files with --vocab-size pieces.
Checkpoints go to DIR/checkpoints (checkpoint_<step>.safetensors; --resume last picks the
newest), the log to DIR/train.log. SIGINT/SIGTERM stop after the current update and save a
checkpoint. --init-from CKPT starts from the weights of another run's checkpoint (same config
and tokenizers) with a fresh optimizer, schedule and data order: fine-tuning on other data.
A run started with --init-from resumes from its own checkpoints. --average-last N exports
the mean of the last N checkpoints; --fp16 stores the weights as F16. After exporting, the
model is loaded back as the server loads it and its log-probabilities are compared with the
trainer's (the run fails on a mismatch).
--score-out F writes the first --score-sentences (default 8) validation texts with the
exported model's per-token log-probabilities as JSON lines.
Unless they are set, normserve-train restarts itself once with OMP_NUM_THREADS=<threads> (BLIS
runs its GEMMs on one thread otherwise) and OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads
slow training down on a shared machine).
)";

void OnSignal(int) { normserve::train::RequestStop(); }

double ParseDouble(const std::string& flag, const std::string& value) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty()) {
    throw std::invalid_argument(flag + " takes a number, got '" + value + "'");
  }
  return v;
}

int64_t ParseInt(const std::string& flag, const std::string& value) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty()) {
    throw std::invalid_argument(flag + " takes an integer, got '" + value + "'");
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  using normserve::train::TrainerOptions;
  TrainerOptions o;
  try {
    const std::map<std::string, std::function<void(const std::string&)>> with_value = {
        {"--config", [&](const std::string& v) { o.config_path = v; }},
        {"--out", [&](const std::string& v) { o.out_dir = v; }},
        {"--train-source", [&](const std::string& v) { o.train_source = v; }},
        {"--train-target", [&](const std::string& v) { o.train_target = v; }},
        {"--valid-source", [&](const std::string& v) { o.valid_source = v; }},
        {"--valid-target", [&](const std::string& v) { o.valid_target = v; }},
        {"--train-text", [&](const std::string& v) { o.train_text = v; }},
        {"--valid-text", [&](const std::string& v) { o.valid_text = v; }},
        {"--checkpoint-dir", [&](const std::string& v) { o.checkpoint_dir = v; }},
        {"--log-file", [&](const std::string& v) { o.log_file = v; }},
        {"--source-spm", [&](const std::string& v) { o.source_spm = v; }},
        {"--target-spm", [&](const std::string& v) { o.target_spm = v; }},
        {"--spm", [&](const std::string& v) { o.target_spm = v; }},
        {"--vocab-size",
         [&](const std::string& v) {
           o.vocab_size = static_cast<int>(ParseInt("--vocab-size", v));
         }},
        {"--max-tokens", [&](const std::string& v) { o.max_tokens = ParseInt("--max-tokens", v); }},
        {"--steps", [&](const std::string& v) { o.steps = ParseInt("--steps", v); }},
        {"--warmup", [&](const std::string& v) { o.warmup = ParseInt("--warmup", v); }},
        {"--lr", [&](const std::string& v) { o.lr = ParseDouble("--lr", v); }},
        {"--dropout", [&](const std::string& v) { o.dropout = ParseDouble("--dropout", v); }},
        {"--attention-dropout",
         [&](const std::string& v) {
           o.attention_dropout = ParseDouble("--attention-dropout", v);
         }},
        {"--activation-dropout",
         [&](const std::string& v) {
           o.activation_dropout = ParseDouble("--activation-dropout", v);
         }},
        {"--label-smoothing",
         [&](const std::string& v) { o.label_smoothing = ParseDouble("--label-smoothing", v); }},
        {"--clip", [&](const std::string& v) { o.clip = ParseDouble("--clip", v); }},
        {"--weight-decay",
         [&](const std::string& v) { o.adam.weight_decay = ParseDouble("--weight-decay", v); }},
        {"--adam-betas",
         [&](const std::string& v) {
           const size_t comma = v.find(',');
           if (comma == std::string::npos) {
             throw std::invalid_argument("--adam-betas takes B1,B2, got '" + v + "'");
           }
           o.adam.beta1 = ParseDouble("--adam-betas", v.substr(0, comma));
           o.adam.beta2 = ParseDouble("--adam-betas", v.substr(comma + 1));
         }},
        {"--adam-eps", [&](const std::string& v) { o.adam.eps = ParseDouble("--adam-eps", v); }},
        {"--powernorm-warmup",
         [&](const std::string& v) { o.powernorm_warmup = ParseInt("--powernorm-warmup", v); }},
        {"--powernorm-alpha-fwd",
         [&](const std::string& v) {
           o.powernorm_alpha_forward = ParseDouble("--powernorm-alpha-fwd", v);
         }},
        {"--powernorm-alpha-bwd",
         [&](const std::string& v) {
           o.powernorm_alpha_backward = ParseDouble("--powernorm-alpha-bwd", v);
         }},
        {"--save-every", [&](const std::string& v) { o.save_every = ParseInt("--save-every", v); }},
        {"--validate-every",
         [&](const std::string& v) { o.validate_every = ParseInt("--validate-every", v); }},
        {"--log-every", [&](const std::string& v) { o.log_every = ParseInt("--log-every", v); }},
        {"--average-last",
         [&](const std::string& v) { o.average_last = ParseInt("--average-last", v); }},
        {"--keep-last", [&](const std::string& v) { o.keep_last = ParseInt("--keep-last", v); }},
        {"--resume", [&](const std::string& v) { o.resume = v; }},
        {"--init-from", [&](const std::string& v) { o.init_from = v; }},
        {"--threads",
         [&](const std::string& v) { o.threads = static_cast<int>(ParseInt("--threads", v)); }},
        {"--seed",
         [&](const std::string& v) { o.seed = static_cast<uint64_t>(ParseInt("--seed", v)); }},
        {"--score-out", [&](const std::string& v) { o.score_out = v; }},
        {"--score-sentences",
         [&](const std::string& v) { o.score_sentences = ParseInt("--score-sentences", v); }},
    };
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "--help" || flag == "-h") {
        std::cout << kUsage;
        return 0;
      }
      if (flag == "--fp16") {
        o.fp16 = true;
        continue;
      }
      if (flag == "--no-progress") {
        o.progress = false;
        continue;
      }
      const auto it = with_value.find(flag);
      if (it == with_value.end()) throw std::invalid_argument("unknown flag " + flag);
      if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
      it->second(argv[++i]);
    }
    if (argc < 2) throw std::invalid_argument("--config and --out are required");
    if (o.threads < 0) throw std::invalid_argument("--threads must not be negative");
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-train: " << e.what() << "\n\n" << kUsage;
    return 2;
  }
  normserve::RestartWithComputeEnvironment(argv, o.threads);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    normserve::train::Trainer trainer(o);
    const auto summary = trainer.Run();
    if (summary.interrupted) return 130;
    std::cout << "wrote " << o.out_dir << " (" << summary.steps << " updates, valid ppl "
              << summary.valid_perplexity << ")\n";
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve-train: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "normserve-train: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
