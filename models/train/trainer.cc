#include "models/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "models/io/model_config.h"
#include "models/text/tokenizer.h"
#include "models/train/checkpoint.h"
#include "models/train/data.h"
#include "models/train/export.h"
#include "models/train/train_model.h"

namespace normserve::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop_requested{false};

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[64];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  }
  return buf;
}

std::string Format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string Timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

// The log file gets every message with a timestamp; stderr gets them too (when `echo`), and,
// on a terminal, one progress line that updates in place.
class Logger {
 public:
  Logger(const std::string& path, bool echo)
      : file_(path, std::ios::app), echo_(echo), tty_(echo && ::isatty(STDERR_FILENO)) {
    if (!file_) throw std::runtime_error("cannot open the log file " + path);
  }
  ~Logger() { ClearProgress(); }

  void Line(const std::string& text) {
    file_ << Timestamp() << " " << text << "\n" << std::flush;
    if (echo_) {
      ClearProgress();
      std::cerr << text << "\n" << std::flush;
    }
  }
  // A periodic training line: always in the file; on stderr only without a terminal (where
  // the progress line shows the same).
  void Periodic(const std::string& text) {
    file_ << Timestamp() << " " << text << "\n" << std::flush;
    if (echo_ && !tty_) std::cerr << text << "\n" << std::flush;
  }
  void Progress(const std::string& text) {
    if (!tty_) return;
    if (shown_ && Seconds(last_progress_) < 0.25) return;
    std::cerr << "\r\033[K" << text << std::flush;
    shown_ = true;
    last_progress_ = Clock::now();
  }
  void ClearProgress() {
    if (shown_) std::cerr << "\r\033[K" << std::flush;
    shown_ = false;
  }

 private:
  std::ofstream file_;
  bool echo_, tty_;
  bool shown_ = false;
  Clock::time_point last_progress_ = Clock::now();
};

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The dropout seed of one update: a resumed run draws the same masks.
uint64_t StepSeed(uint64_t seed, int64_t step) {
  return SplitMix(SplitMix(seed) ^ static_cast<uint64_t>(step));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Whether two norm configs compute the same function (fields a kind ignores are skipped).
bool SameNorm(const NormConfig& a, const NormConfig& b) {
  if (a.kind != b.kind || a.eps != b.eps) return false;
  switch (a.kind) {
    case NormKind::kLayerNorm:
      return a.eps_inside_sqrt == b.eps_inside_sqrt;
    case NormKind::kPartialRMSNorm:
      if (a.partial != b.partial || a.partial_round_up != b.partial_round_up) return false;
      [[fallthrough]];
    case NormKind::kRMSNorm:
      return a.bias == b.bias && a.eps_inside_sqrt == b.eps_inside_sqrt;
    case NormKind::kPowerNorm:
      return a.groups == b.groups && a.group_eps == b.group_eps;
    case NormKind::kBatchNorm:
      return true;
  }
  return false;
}

struct ValidResult {
  double loss = 0, nll = 0;
  int64_t tokens = 0;
  double nll_per_token() const { return tokens ? nll / static_cast<double>(tokens) : 0; }
  double loss_per_token() const { return tokens ? loss / static_cast<double>(tokens) : 0; }
};

ValidResult Validate(TrainTransformer& model, const Corpus& corpus,
                     const std::vector<std::vector<int64_t>>& batches, double smoothing) {
  at::NoGradGuard no_grad;
  const SpecialTokens& special = model.config().special;
  ValidResult r;
  for (const auto& indices : batches) {
    const Batch batch = Collate(corpus, indices, special);
    const LossSums sums = LabelSmoothedLoss(model.Forward(batch, ForwardMode{}), batch.target,
                                            special.pad, smoothing);
    r.loss += sums.loss.item<double>();
    r.nll += sums.nll.item<double>();
    r.tokens += batch.target_tokens;
  }
  return r;
}

// The SentencePiece model `name` in the output directory: copied from `given`, kept from an
// earlier run when resuming, or trained on `inputs`.
std::unique_ptr<Tokenizer> PrepareTokenizer(const TrainerOptions& o, const std::string& name,
                                            const std::string& given,
                                            const std::vector<std::string>& inputs, bool resuming,
                                            Logger& log) {
  const std::string dest = o.out_dir + "/" + name;
  if (!given.empty()) {
    if (!fs::exists(dest) || !fs::equivalent(given, dest)) {
      fs::copy_file(given, dest, fs::copy_options::overwrite_existing);
    }
    log.Line("tokenizer " + name + ": copied from " + given);
  } else if (resuming && fs::exists(dest)) {
    log.Line("tokenizer " + name + ": kept from the run being resumed");
  } else {
    std::string input = inputs.front();
    std::string joined;
    if (inputs.size() > 1) {
      joined = o.checkpoint_dir + "/" + name + ".input.txt";
      std::ofstream out(joined, std::ios::binary | std::ios::trunc);
      for (const std::string& f : inputs) out << ReadFile(f);
      if (!out.flush()) throw std::runtime_error("cannot write " + joined);
      input = joined;
    }
    log.Line("tokenizer " + name + ": training " + std::to_string(o.vocab_size) + " pieces on " +
             input);
    const std::string prefix = o.out_dir + "/" + fs::path(name).stem().string();
    TrainTokenizer({input, prefix, o.vocab_size});
    fs::rename(prefix + ".model", dest);
    fs::remove(prefix + ".vocab");
    if (!joined.empty()) fs::remove(joined);
  }
  return Tokenizer::Load(dest);
}

void Require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

void RequestStop() { g_stop_requested.store(true); }

Trainer::Trainer(TrainerOptions options) : options_(std::move(options)) {
  TrainerOptions& o = options_;
  if (o.checkpoint_dir.empty()) o.checkpoint_dir = o.out_dir + "/checkpoints";
  if (o.log_file.empty()) o.log_file = o.out_dir + "/train.log";
  if (o.powernorm_warmup < 0) o.powernorm_warmup = o.warmup;
}

TrainSummary Trainer::Run() {
  const TrainerOptions& o = options_;
  Require(!o.config_path.empty(), "--config is required");
  Require(!o.out_dir.empty(), "--out is required");
  Require(o.steps > 0, "--steps must be positive");
  Require(o.max_tokens > 0, "--max-tokens must be positive");
  Require(o.warmup >= 0, "--warmup must not be negative");
  Require(o.lr > 0, "--lr must be positive");
  Require(o.dropout >= 0 && o.dropout < 1 && o.attention_dropout >= 0 && o.attention_dropout < 1 &&
              o.activation_dropout >= 0 && o.activation_dropout < 1,
          "dropout probabilities must be in [0, 1)");
  Require(o.label_smoothing >= 0 && o.label_smoothing < 1, "--label-smoothing must be in [0, 1)");
  Require(o.clip >= 0, "--clip must not be negative");
  Require(o.average_last >= 1, "--average-last must be at least 1");
  Require(o.vocab_size >= 8, "--vocab-size must be at least 8");
  g_stop_requested.store(false);
  if (o.threads > 0) at::set_num_threads(o.threads);

  fs::create_directories(o.out_dir);
  fs::create_directories(o.checkpoint_dir);
  Logger log(o.log_file, o.progress);

  // ---- Resume point ---------------------------------------------------------------------
  std::string resume_path = o.resume;
  if (resume_path == "last") {
    const auto found = ListCheckpoints(o.checkpoint_dir);
    Require(!found.empty(), "--resume last: no checkpoint in " + o.checkpoint_dir);
    resume_path = found.back().second;
  }
  const bool resuming = !resume_path.empty();
  Checkpoint resumed;
  json state;
  if (resuming) {
    resumed = LoadCheckpoint(resume_path);
    state = json::parse(resumed.state_json);
  }

  // ---- Config and tokenizers ------------------------------------------------------------
  json config_json;
  try {
    config_json = json::parse(ReadFile(o.config_path));
  } catch (const json::exception& e) {
    throw std::invalid_argument(o.config_path + ": not valid JSON: " + e.what());
  }
  const std::string arch = config_json.value("architecture", "");
  const bool mt = arch == "transformer_mt";
  Require(mt || arch == "transformer_lm",
          o.config_path + ": 'architecture' must be transformer_mt or transformer_lm");
  std::string train_src = o.train_source, train_tgt = mt ? o.train_target : o.train_text;
  std::string valid_src = o.valid_source, valid_tgt = mt ? o.valid_target : o.valid_text;
  if (mt) {
    Require(!train_src.empty() && !train_tgt.empty(),
            "transformer_mt needs --train-source and --train-target");
    Require(valid_src.empty() == valid_tgt.empty(),
            "give both --valid-source and --valid-target, or neither");
  } else {
    Require(!train_tgt.empty(), "transformer_lm needs --train-text");
  }
  log.Line("normserve-train: " + arch + " from " + o.config_path + " into " + o.out_dir +
           (resuming ? " (resuming " + resume_path + ")" : ""));

  std::unique_ptr<Tokenizer> source_tok, target_tok;
  if (mt) {
    if (config_json.value("share_all_embeddings", false)) {
      Require(o.source_spm == o.target_spm,
              "share_all_embeddings needs one tokenizer: give the same --source-spm and "
              "--target-spm, or neither");
      target_tok =
          PrepareTokenizer(o, "joint.spm", o.source_spm, {train_src, train_tgt}, resuming, log);
      source_tok = Tokenizer::Load(o.out_dir + "/joint.spm");
      config_json["tokenizer"] = {{"source", "joint.spm"}, {"target", "joint.spm"}};
    } else {
      source_tok = PrepareTokenizer(o, "source.spm", o.source_spm, {train_src}, resuming, log);
      target_tok = PrepareTokenizer(o, "target.spm", o.target_spm, {train_tgt}, resuming, log);
      config_json["tokenizer"] = {{"source", "source.spm"}, {"target", "target.spm"}};
    }
    config_json["source_vocab_size"] = source_tok->vocab_size();
    config_json["target_vocab_size"] = target_tok->vocab_size();
  } else {
    target_tok = PrepareTokenizer(o, "lm.spm", o.target_spm, {train_tgt}, resuming, log);
    config_json["vocab_size"] = target_tok->vocab_size();
    config_json["tokenizer"] = {{"model", "lm.spm"}};
  }
  // Train exactly what config.json will say: parse, write, parse again.
  const ModelConfig given = ParseModelConfig(config_json.dump(), o.config_path);
  const std::string config_text = ModelConfigToJson(given);
  const ModelConfig config = ParseModelConfig(config_text, o.config_path);
  for (NormSite site : config.sites()) {
    if (!SameNorm(given.norm(site), config.norm(site))) {
      throw std::invalid_argument(o.config_path + ": norm." + NormSiteName(site) +
                                  " has a setting that config.json cannot carry for its type "
                                  "(e.g. eps_placement on a layernorm); remove it");
    }
  }
  const auto require_same_config = [&](const std::string& path, const json& saved) {
    if (saved.value("config", "") != config_text) {
      throw std::invalid_argument(path + " was trained with another config:\n" +
                                  saved.value("config", "") + "this run's:\n" + config_text);
    }
  };
  if (resuming) require_same_config(resume_path, state);
  const SpecialTokens& special = config.special;

  // ---- Data ------------------------------------------------------------------------------
  const auto t_data = Clock::now();
  const Corpus train =
      mt ? LoadParallelCorpus(train_src, train_tgt, *source_tok, *target_tok, config.max_positions)
         : LoadTextCorpus(train_tgt, *target_tok, config.max_positions);
  Require(train.size() > 0, "the training data has no usable sentence");
  Corpus valid;
  if (!valid_tgt.empty()) {
    valid = mt ? LoadParallelCorpus(valid_src, valid_tgt, *source_tok, *target_tok,
                                    config.max_positions)
               : LoadTextCorpus(valid_tgt, *target_tok, config.max_positions);
  }
  const auto batches = MakeBatches(train, o.max_tokens, o.seed);
  const auto valid_batches = MakeBatches(valid, o.max_tokens, o.seed, false);
  int64_t train_tokens = 0;
  for (const auto& t : train.target) train_tokens += static_cast<int64_t>(t.size()) + 1;
  log.Line("data: " + std::to_string(train.size()) + " training sentences (" +
           std::to_string(train_tokens) + " target tokens with </s>, " +
           std::to_string(batches.size()) + " batches of <= " + std::to_string(o.max_tokens) +
           " tokens; skipped " + std::to_string(train.skipped_empty) + " empty, " +
           std::to_string(train.skipped_long) + " too long), " + std::to_string(valid.size()) +
           " validation sentences; " + Format("%.1f s", Seconds(t_data)));

  // ---- Model and optimizer ---------------------------------------------------------------
  ModelTrainingOptions mo;
  mo.dropout = o.dropout;
  mo.attention_dropout = o.attention_dropout;
  mo.activation_dropout = o.activation_dropout;
  mo.norms.powernorm = {o.powernorm_alpha_forward, o.powernorm_alpha_backward, o.powernorm_warmup};
  TrainTransformer model(config, mo, o.seed);
  Adam adam(model.parameters(), o.adam);
  log.Line("model: " + std::to_string(model.parameter_count()) + " parameters, norm " +
           config.norm_label() + ", " + std::to_string(at::get_num_threads()) + " threads");

  int64_t step = 0, epoch = 1, position = 0, skipped_updates = 0;
  double seconds_before = 0;  // training time of earlier runs
  int64_t tokens_before = 0;
  if (resuming) {
    if (state.value("batches", int64_t{-1}) != static_cast<int64_t>(batches.size()) ||
        state.value("seed", uint64_t{0}) != o.seed) {
      throw std::invalid_argument(
          resume_path + " was trained on " + std::to_string(state.value("batches", 0)) +
          " batches with seed " + std::to_string(state.value("seed", uint64_t{0})) +
          "; this run has " + std::to_string(batches.size()) + " with seed " +
          std::to_string(o.seed) + " (same data, --max-tokens and --seed resume exactly)");
    }
    model.LoadState(resumed.model);
    adam.LoadState(resumed.optimizer, state.at("adam_steps").get<int64_t>());
    step = state.at("step").get<int64_t>();
    epoch = state.at("epoch").get<int64_t>();
    position = state.at("position").get<int64_t>();
    skipped_updates = state.value("skipped_updates", int64_t{0});
    seconds_before = state.value("train_seconds", 0.0);
    tokens_before = state.value("train_tokens", int64_t{0});
    resumed = Checkpoint();
    log.Line("resumed at step " + std::to_string(step) + " (epoch " + std::to_string(epoch) +
             ", batch " + std::to_string(position) + ")");
  } else if (!o.init_from.empty()) {
    const Checkpoint init = LoadCheckpoint(o.init_from);
    const json init_state = json::parse(init.state_json);
    require_same_config(o.init_from, init_state);
    model.LoadState(init.model);
    log.Line("initialized from " + o.init_from + " (step " +
             std::to_string(init_state.value("step", int64_t{0})) +
             "); optimizer, schedule and data order start afresh");
  }

  TrainSummary summary;
  std::vector<int64_t> order = EpochOrder(static_cast<int64_t>(batches.size()), o.seed, epoch);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  int64_t last_saved = resuming ? step : -1;

  const auto save = [&]() {
    json s = {{"step", step},
              {"epoch", epoch},
              {"position", position},
              {"adam_steps", adam.steps()},
              {"batches", static_cast<int64_t>(batches.size())},
              {"seed", o.seed},
              {"skipped_updates", skipped_updates},
              {"train_seconds", seconds_before},
              {"train_tokens", tokens_before},
              {"config", config_text}};
    const std::string path = CheckpointPath(o.checkpoint_dir, step);
    SaveCheckpoint(path, {model.State(), adam.State(), s.dump()});
    last_saved = step;
    summary.last_checkpoint = path;
    const auto all = ListCheckpoints(o.checkpoint_dir);
    const auto keep = static_cast<size_t>(std::max<int64_t>({o.keep_last, o.average_last, 1}));
    for (size_t i = 0; i + keep < all.size(); ++i) fs::remove(all[i].second);
    log.Periodic("saved " + path);
  };
  const auto validate = [&](const std::string& what) {
    if (valid.size() == 0) return ValidResult{};
    const auto t0 = Clock::now();
    const ValidResult r = Validate(model, valid, valid_batches, o.label_smoothing);
    log.Line(what + " | valid loss " + Format("%.4f", r.loss_per_token()) + " | nll " +
             Format("%.4f", r.nll_per_token()) + " | ppl " +
             Format("%.2f", std::exp(r.nll_per_token())) + " | " + Format("%.1f s", Seconds(t0)));
    return r;
  };

  // ---- Training loop ---------------------------------------------------------------------
  const int64_t first_step = step;
  const auto run_start = Clock::now();
  double run_train_seconds = 0;
  int64_t run_tokens = 0;
  double window_loss = 0, window_nll = 0, window_seconds = 0, seconds_per_step = 0;
  int64_t window_tokens = 0, window_steps = 0, consecutive_bad = 0;
  double last_gnorm = 0, last_lr = 0;
  while (step < o.steps && !g_stop_requested.load()) {
    if (position >= static_cast<int64_t>(batches.size())) {
      ++epoch;
      position = 0;
      order = EpochOrder(static_cast<int64_t>(batches.size()), o.seed, epoch);
    }
    const auto t0 = Clock::now();
    const Batch batch = Collate(train, batches[order[position]], special);
    ++position;
    ++step;
    generator.set_current_seed(StepSeed(o.seed, step));
    last_lr = InverseSqrtLearningRate(step, o.lr, o.warmup);
    const at::Tensor logits = model.Forward(batch, ForwardMode{true, step}, generator);
    const LossSums sums = LabelSmoothedLoss(logits, batch.target, special.pad, o.label_smoothing);
    const auto tokens = static_cast<double>(batch.target_tokens);
    (sums.loss / tokens).backward();
    const double loss = sums.loss.item<double>();
    const double nll = sums.nll.item<double>();
    last_gnorm = ClipGradNorm(model.parameters(), o.clip);
    if (std::isfinite(loss) && std::isfinite(last_gnorm)) {
      adam.Step(last_lr);
      consecutive_bad = 0;
      window_loss += loss;
      window_nll += nll;
      window_tokens += batch.target_tokens;
    } else {
      ++skipped_updates;
      log.Line("step " + std::to_string(step) + ": loss " + std::to_string(loss) +
               ", gradient norm " + std::to_string(last_gnorm) + "; update skipped");
      if (++consecutive_bad >= 10) {
        throw std::runtime_error(
            "10 updates in a row had a non-finite loss or gradient; lower "
            "--lr or raise --warmup");
      }
    }
    adam.ZeroGrad();
    const double dt = Seconds(t0);
    run_train_seconds += dt;
    seconds_before += dt;
    run_tokens += batch.target_tokens;
    tokens_before += batch.target_tokens;
    window_seconds += dt;
    ++window_steps;
    seconds_per_step = seconds_per_step == 0 ? dt : 0.95 * seconds_per_step + 0.05 * dt;

    const double wl = window_tokens ? window_loss / static_cast<double>(window_tokens) : 0;
    const double wn = window_tokens ? window_nll / static_cast<double>(window_tokens) : 0;
    const double tps = window_seconds > 0 ? static_cast<double>(window_tokens) / window_seconds : 0;
    // Validation and checkpoints take their share of the wall time too.
    const double wall_per_step = Seconds(run_start) / static_cast<double>(step - first_step);
    const double eta =
        static_cast<double>(o.steps - step) * std::max(seconds_per_step, wall_per_step);
    const std::string line = "step " + std::to_string(step) + "/" + std::to_string(o.steps) +
                             " | loss " + Format("%.3f", wl) + " | nll " + Format("%.3f", wn) +
                             " | lr " + Format("%.2e", last_lr) + " | gnorm " +
                             Format("%.2f", last_gnorm) + " | " + Format("%.0f", tps) +
                             " tok/s | ETA " + FormatDuration(eta);
    log.Progress(line);
    if (step % std::max<int64_t>(o.log_every, 1) == 0 || step == o.steps) {
      log.Periodic(line + " | epoch " + std::to_string(epoch) + " | elapsed " +
                   FormatDuration(Seconds(run_start)));
      summary.train_loss = wl;
      summary.train_nll = wn;
      window_loss = window_nll = window_seconds = 0;
      window_tokens = window_steps = 0;
    }
    if (o.validate_every > 0 && step % o.validate_every == 0 && step < o.steps) {
      validate("step " + std::to_string(step));
    }
    if (o.save_every > 0 && step % o.save_every == 0) save();
  }
  if (window_tokens > 0) {
    summary.train_loss = window_loss / static_cast<double>(window_tokens);
    summary.train_nll = window_nll / static_cast<double>(window_tokens);
  }
  log.ClearProgress();
  summary.steps = step;
  summary.tokens_per_second = run_train_seconds > 0 ? run_tokens / run_train_seconds : 0;
  if (last_saved != step) save();
  if (g_stop_requested.load() && step < o.steps) {
    summary.interrupted = true;
    log.Line("stopped at step " + std::to_string(step) + "; resume with --resume " +
             summary.last_checkpoint);
    return summary;
  }
  log.Line("trained " + std::to_string(step - first_step) + " updates in " +
           FormatDuration(run_train_seconds) + " (" + Format("%.0f", summary.tokens_per_second) +
           " target tokens/s" +
           (skipped_updates ? ", " + std::to_string(skipped_updates) + " skipped" : "") + ")");

  // ---- Averaging, export and its check ---------------------------------------------------
  if (o.average_last > 1) {
    std::vector<std::string> paths;
    for (const auto& [s, path] : ListCheckpoints(o.checkpoint_dir)) {
      if (s <= step) paths.push_back(path);
    }
    if (static_cast<int64_t>(paths.size()) > o.average_last) {
      paths.erase(paths.begin(), paths.end() - o.average_last);
    }
    if (static_cast<int64_t>(paths.size()) < o.average_last) {
      log.Line("only " + std::to_string(paths.size()) + " checkpoints to average, not " +
               std::to_string(o.average_last));
    }
    model.LoadState(AverageCheckpoints(paths));
    std::string names;
    for (const auto& p : paths) names += " " + fs::path(p).filename().string();
    log.Line("averaged" + names);
  }
  const ValidResult final_valid = validate("final model");
  summary.valid_nll = final_valid.nll_per_token();
  summary.valid_perplexity = std::exp(summary.valid_nll);

  const auto dtype = o.fp16 ? safetensors::DType::kF16 : safetensors::DType::kF32;
  std::map<std::string, at::Tensor> weights = model.ExportTensors();
  ExportModelDirectory(o.out_dir, config, weights, dtype);
  if (o.fp16) {
    // Check against the rounded weights the served model reads.
    std::map<std::string, at::Tensor> rounded = model.State();
    for (auto& [name, t] : rounded) t = t.detach().to(at::kHalf).to(at::kFloat);
    model.LoadState(rounded);
  }
  const Corpus& check_corpus = valid.size() > 0 ? valid : train;
  summary.export_max_logprob_diff =
      CompareWithServedModel(o.out_dir, model, check_corpus, o.check_sentences);
  log.Line("exported " + o.out_dir + (o.fp16 ? " (F16)" : " (F32)") +
           "; served model vs trainer: max |log-prob difference| " +
           Format("%.2e", summary.export_max_logprob_diff));
  if (!(summary.export_max_logprob_diff <= 1e-3)) {
    throw std::runtime_error("the exported model in " + o.out_dir +
                             " scores differently from the trainer (max log-prob difference " +
                             std::to_string(summary.export_max_logprob_diff) + ")");
  }

  if (!o.score_out.empty()) {
    const std::string src_file = mt ? (valid_src.empty() ? train_src : valid_src) : "";
    const std::string tgt_file = valid_tgt.empty() ? train_tgt : valid_tgt;
    const auto src_lines = mt ? ReadLines(src_file, o.score_sentences) : std::vector<std::string>{};
    const auto tgt_lines = ReadLines(tgt_file, o.score_sentences);
    const Corpus sample = TokenizeLines(src_lines, tgt_lines, mt ? source_tok.get() : nullptr,
                                        *target_tok, config.max_positions);
    std::ofstream out(o.score_out, std::ios::trunc);
    if (sample.size() > 0) {
      std::vector<int64_t> all(sample.size());
      for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
      const Batch batch = Collate(sample, all, special);
      at::NoGradGuard no_grad;
      const auto logprobs = TargetLogProbs(model.Forward(batch, ForwardMode{}), batch, special.pad);
      for (size_t i = 0; i < sample.size(); ++i) {
        json j = {{"logprobs", logprobs[i]}};
        const auto line = static_cast<size_t>(sample.line[i]);
        if (mt) j["source"] = src_lines[line];
        j[mt ? "target" : "text"] = tgt_lines[line];
        out << j.dump() << "\n";
      }
    }
    if (!out.flush()) throw std::runtime_error("cannot write " + o.score_out);
  }
  return summary;
}

}  // namespace normserve::train
