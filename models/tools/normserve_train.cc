// normserve-train: trains transformer_mt / transformer_lm models with any norm per site and
// writes a model directory that normserved serves unchanged (models/train/trainer.h).
#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/command_line.h"
#include "models/compute.h"
#include "models/train/trainer.h"

namespace {

constexpr char kDescription[] =
    R"(Trains the architecture and norms of CONFIG.json (the config.json vocabulary that normserved
reads; vocabulary sizes and tokenizer names are filled in) on text files with one sentence
per line, and writes DIR/config.json, DIR/model.safetensors and the SentencePiece model(s):
a model directory that normserved loads unchanged. Copy those files into
<repository>/<model>/<version>/ to serve them.

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
slow training down on a shared machine).)";

constexpr char kFooter[] =
    R"(Every flag can also come from its environment variable (shown as env); a flag wins.
Exit status: 0 written, 1 failed, 2 on a usage error, 130 when interrupted.)";

using normserve::train::TrainerOptions;

void OnSignal(int) { normserve::train::RequestStop(); }

// The trainer's flags into *o. Returns the status to exit with when normserve-train is done
// (--help, --version, a usage error); nullopt when it goes on to train.
std::optional<int> ParseTrainerOptions(int argc, char** argv, TrainerOptions* o) {
  using normserve::command_line::NumberIn;
  CLI::App app(kDescription, "normserve-train");
  normserve::command_line::Configure(&app);
  app.footer(kFooter);
  const auto file = [&](const std::string& flag, std::string* field, const std::string& what,
                        const std::string& group) {
    return app.add_option(flag, *field, what)->type_name("F")->group(group);
  };
  const std::string data = "Model and data";
  file("--config", &o->config_path, "the architecture and norms", data)
      ->type_name("CONFIG.json")
      ->required();
  file("--out", &o->out_dir, "the model directory to write", data)->type_name("DIR")->required();
  file("--train-source", &o->train_source, "transformer_mt: training sources, one a line", data);
  file("--train-target", &o->train_target, "transformer_mt: training targets", data);
  file("--valid-source", &o->valid_source, "transformer_mt: validation sources", data);
  file("--valid-target", &o->valid_target, "transformer_mt: validation targets", data);
  file("--train-text", &o->train_text, "transformer_lm: training texts, one a line", data);
  file("--valid-text", &o->valid_text, "transformer_lm: validation texts", data);
  file("--source-spm", &o->source_spm, "an existing SentencePiece model for the sources", data);
  file("--target-spm", &o->target_spm, "an existing SentencePiece model for the targets", data);
  file("--spm", &o->target_spm, "transformer_lm: an existing SentencePiece model", data);
  app.add_option("--vocab-size", o->vocab_size, "pieces of the tokenizers trained here")
      ->type_name("N")
      ->check(NumberIn(2, 1 << 20))
      ->group(data);

  const std::string training = "Training";
  const auto count = [&](const std::string& flag, int64_t* field, const std::string& what) {
    return app.add_option(flag, *field, what)
        ->type_name("N")
        ->check(NumberIn(0, 1e15))
        ->group(training);
  };
  const auto number = [&](const std::string& flag, double* field, const std::string& what) {
    return app.add_option(flag, *field, what)->type_name("X")->group(training);
  };
  count("--max-tokens", &o->max_tokens, "padded tokens per batch");
  count("--steps", &o->steps, "total updates (a resumed run continues up to this)");
  count("--warmup", &o->warmup, "learning-rate warm-up updates");
  number("--lr", &o->lr, "peak learning rate");
  number("--dropout", &o->dropout, "dropout");
  number("--attention-dropout", &o->attention_dropout, "dropout of the attention weights");
  number("--activation-dropout", &o->activation_dropout, "dropout after the FFN activation");
  number("--label-smoothing", &o->label_smoothing, "label smoothing");
  number("--clip", &o->clip, "gradient-norm clipping (0: off)");
  number("--weight-decay", &o->adam.weight_decay, "decoupled (AdamW-style) weight decay");
  std::vector<double> adam_betas;
  app.add_option("--adam-betas", adam_betas, "Adam's beta1 and beta2")
      ->type_name("B1,B2")
      ->delimiter(',')
      ->default_str("0.9,0.98")
      ->group(training);
  number("--adam-eps", &o->adam.eps, "Adam's epsilon");
  app.add_option("--powernorm-warmup", o->powernorm_warmup,
                 "PowerNorm's warm-up updates (default: --warmup)")
      ->type_name("N")
      ->default_str("")
      ->group(training);
  number("--powernorm-alpha-fwd", &o->powernorm_alpha_forward, "PowerNorm's forward alpha");
  number("--powernorm-alpha-bwd", &o->powernorm_alpha_backward, "PowerNorm's backward alpha");
  app.add_option("--threads", o->threads, "ATen intra-op threads (0: all cores)")
      ->type_name("N")
      ->check(NumberIn(0, 1024))
      ->group(training);
  app.add_option("--seed", o->seed, "seed of the weights, dropout and data order")
      ->type_name("N")
      ->group(training);
  file("--init-from", &o->init_from,
       "start from the weights of another run's checkpoint (fine-tuning)", training)
      ->type_name("CKPT");

  const std::string output = "Checkpoints, logs and output";
  count("--save-every", &o->save_every, "updates between checkpoints")->group(output);
  count("--validate-every", &o->validate_every, "updates between validations")->group(output);
  count("--log-every", &o->log_every, "updates between log lines")->group(output);
  count("--average-last", &o->average_last, "export the mean of the last N checkpoints")
      ->group(output);
  count("--keep-last", &o->keep_last, "checkpoints kept on disk")->group(output);
  file("--resume", &o->resume, "continue from a checkpoint; last: the newest", output)
      ->type_name("CKPT|last");
  file("--checkpoint-dir", &o->checkpoint_dir, "default DIR/checkpoints", output)->type_name("DIR");
  file("--log-file", &o->log_file, "default DIR/train.log (appended)", output);
  app.add_flag("--fp16", o->fp16, "store the exported weights as F16")->group(output);
  bool no_progress = false;
  app.add_flag("--no-progress", no_progress, "no updating progress line on stderr")->group(output);
  file("--score-out", &o->score_out,
       "JSON lines: validation texts with the exported model's per-token log-probs", output);
  count("--score-sentences", &o->score_sentences, "texts that --score-out writes")->group(output);
  normserve::command_line::AddEnvironmentFallbacks("normserve-train", &app);

  return normserve::command_line::Parse(&app, argc, argv, [&] {
    if (!adam_betas.empty()) {
      if (adam_betas.size() != 2) {
        throw std::invalid_argument("--adam-betas takes two numbers, B1,B2");
      }
      o->adam.beta1 = adam_betas[0];
      o->adam.beta2 = adam_betas[1];
    }
    o->progress = !no_progress;
  });
}

}  // namespace

int main(int argc, char** argv) {
  TrainerOptions o;
  if (const auto exit_status = ParseTrainerOptions(argc, argv, &o)) return *exit_status;
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
    return normserve::command_line::kUsageError;
  } catch (const std::exception& e) {
    std::cerr << "normserve-train: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
