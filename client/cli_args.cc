#include "client/cli_args.h"

#include <CLI/CLI.hpp>
#include <limits>
#include <type_traits>

#include "client/channel_flags.h"
#include "common/command_line.h"

namespace normserve::cli {
namespace {

constexpr char kFooter[] =
    R"(Texts come from the arguments, or one per line from stdin when there are none.
`normserve COMMAND --help` lists a command's flags. The global flags can also come from their
environment variables (shown as env), e.g. NORMSERVE_SERVER=host:50051; a flag wins.
Exit status: 0 on success, 1 when the call fails (the gRPC status name and message go to
stderr), 2 on a usage error; health: 1 when not SERVING.)";

// Sets FIELD only when the flag is given, so that the server's default applies otherwise.
template <typename T>
CLI::Option* AddOptional(CLI::App* command, const std::string& flag, std::optional<T>* field,
                         const std::string& description) {
  CLI::Option* option = command->add_option_function<T>(
      flag, [field](const T& value) { *field = value; }, description);
  // Checked before conversion, so that a word or a negative number gets a message saying
  // what the flag takes.
  if constexpr (std::is_same_v<T, uint32_t>) {
    option->check(command_line::NumberIn(0, std::numeric_limits<uint32_t>::max()));
  }
  return option;
}

// --model, --version and --priority of translate, score and generate.
void AddModelOptions(CLI::App* command, Args* args) {
  command->add_option("--model", args->model, "the model, or a variant group")
      ->type_name("M")
      ->required();
  AddOptional(command, "--version", &args->version, "the model's version (default: newest)")
      ->type_name("N");
  AddOptional(command, "--priority", &args->priority,
              "1 first (default: the model's lowest priority)")
      ->type_name("N");
}

void AddTranslate(CLI::App* app, Args* args) {
  CLI::App* c = app->add_subcommand("translate", "translate texts with a transformer_mt model");
  AddModelOptions(c, args);
  AddOptional(c, "--beam", &args->beam, "beam size")->type_name("N");
  AddOptional(c, "--n-best", &args->n_best, "hypotheses per text")->type_name("N");
  AddOptional(c, "--length-penalty", &args->length_penalty, "length penalty")->type_name("X");
  AddOptional(c, "--max-length-a", &args->max_length_a, "longest output: a * source length + b")
      ->type_name("X");
  AddOptional(c, "--max-length-b", &args->max_length_b, "see --max-length-a")->type_name("N");
  c->add_flag("--tokens", args->tokens, "print each hypothesis's tokens too");
  c->add_option("TEXT", args->texts, "the texts (default: lines of stdin)");
}

void AddScore(CLI::App* app, Args* args) {
  CLI::App* c = app->add_subcommand(
      "score",
      "per-token log-probs and perplexity; for a transformer_mt model each text is\n"
      "\"SOURCE<TAB>TARGET\"");
  AddModelOptions(c, args);
  c->add_option("TEXT", args->texts, "the texts (default: lines of stdin)");
}

void AddGenerate(CLI::App* app, Args* args) {
  CLI::App* c = app->add_subcommand(
      "generate", "continue PROMPT (or stdin with \"-\") with a transformer_lm model, streamed");
  AddModelOptions(c, args);
  AddOptional(c, "--temperature", &args->temperature, "sampling temperature")->type_name("X");
  AddOptional(c, "--top-k", &args->top_k, "sample from the K most likely tokens")->type_name("N");
  AddOptional(c, "--top-p", &args->top_p, "sample from the tokens of this probability mass")
      ->type_name("X");
  AddOptional(c, "--seed", &args->seed, "seed of the sampling: the same output again")
      ->type_name("N");
  AddOptional(c, "--max-new-tokens", &args->max_new_tokens, "tokens to generate at most")
      ->type_name("N");
  AddOptional(c, "--stop", &args->stop, "stop when the output ends with STRING")
      ->type_name("STRING");
  c->add_option("PROMPT", args->texts, "the prompt; \"-\": read it from stdin")->expected(0, 1);
}

void AddModelControl(CLI::App* app, Args* args) {
  app->add_subcommand("models", "list the models and their state");
  for (const char* command : {"load", "unload"}) {
    CLI::App* c = app->add_subcommand(
        command, std::string(command) == "load"
                     ? "(re)load a model of the repository (--model-control explicit)"
                     : "stop serving a model (--model-control explicit)");
    c->add_option("MODEL", args->texts, "the model")->expected(1)->required();
  }
  CLI::App* health =
      app->add_subcommand("health", "exit 0 when the server (or model/service NAME) is SERVING");
  health->add_option("--service", args->service, "a model or service name")->type_name("NAME");
}

}  // namespace

std::optional<int> ParseArgs(int argc, const char* const* argv, Args* args) {
  CLI::App app("The command-line client of normserved.", "normserve");
  command_line::Configure(&app);
  app.footer(kFooter);
  app.add_option("--server", args->server, "normserved's gRPC address")->type_name("ADDR");
  app.add_flag("--json", args->json, "print the responses as JSON");
  app.add_option("--timeout", args->timeout_secs, "deadline of each call")
      ->type_name("SECS")
      ->check(command_line::NumberIn(0.001, 86400));
  app.add_option("--token-file", args->token_file,
                 "a file holding the bearer token that servers with --auth-tokens-file need\n"
                 "(sent as \"authorization: Bearer TOKEN\")")
      ->type_name("F");
  client::AddChannelTlsOptions(&app, &args->tls);
  command_line::AddEnvironmentFallbacks("normserve", &app);

  // The global flags also after the command (fallthrough), set before the commands exist.
  app.fallthrough();
  app.require_subcommand(1);
  AddTranslate(&app, args);
  AddScore(&app, args);
  AddGenerate(&app, args);
  AddModelControl(&app, args);
  return command_line::Parse(&app, argc, argv, [&] {
    args->command = app.get_subcommands().front()->get_name();
    client::CheckChannelTls(args->tls);
  });
}

}  // namespace normserve::cli
