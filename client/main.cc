// normserve: the command-line client of normserved.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "client/auth_token.h"
#include "client/channel.h"
#include "client/cli_args.h"
#include "common/command_line.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "proto/status_names.h"

namespace normserve::cli {
namespace {

namespace v1 = normserve::v1;

int Fail(const grpc::Status& status) {
  std::cerr << "error: " << StatusCodeName(status.error_code()) << ": " << status.error_message()
            << "\n";
  return 1;
}

// Every call: the deadline, and the bearer token when there is one.
void PrepareCall(grpc::ClientContext* context, const Args& args) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(args.timeout_secs * 1000)));
  client::AttachToken(context, args.token);
}

void PrintJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  std::cout << json << "\n";
}

int Translate(v1::NormServe::Stub& stub, const Args& args) {
  v1::TranslateRequest request;
  request.set_model(args.model);
  for (const auto& t : args.texts) request.add_texts(t);
  if (args.version) request.set_version(*args.version);
  if (args.priority) request.set_priority(*args.priority);
  auto* options = request.mutable_options();
  if (args.beam) options->set_beam_size(*args.beam);
  if (args.n_best) options->set_n_best(*args.n_best);
  if (args.length_penalty) options->set_length_penalty(*args.length_penalty);
  if (args.max_length_a) options->set_max_length_a(*args.max_length_a);
  if (args.max_length_b) options->set_max_length_b(*args.max_length_b);
  options->set_return_tokens(args.tokens);

  grpc::ClientContext context;
  PrepareCall(&context, args);
  v1::TranslateResponse response;
  const grpc::Status status = stub.Translate(&context, request, &response);
  if (!status.ok()) return Fail(status);
  if (args.json) {
    PrintJson(response);
    return 0;
  }
  for (const auto& translation : response.translations()) {
    const bool several = translation.hypotheses_size() > 1;
    for (const auto& h : translation.hypotheses()) {
      if (several) std::printf("%.4f\t", h.score());
      std::cout << h.text() << "\n";
      if (h.tokens_size() > 0) {
        std::cout << "  tokens:";
        for (const auto& t : h.tokens()) std::cout << " " << t;
        std::cout << "\n";
      }
    }
    if (several) std::cout << "\n";
  }
  return 0;
}

int Score(v1::NormServe::Stub& stub, const Args& args) {
  v1::ScoreRequest request;
  request.set_model(args.model);
  if (args.version) request.set_version(*args.version);
  if (args.priority) request.set_priority(*args.priority);
  // Translation models score SOURCE<TAB>TARGET pairs, language models texts; the server says
  // which one a model (or every member of a variant group) takes when the other comes.
  const bool pairs = !args.texts.empty() &&
                     std::all_of(args.texts.begin(), args.texts.end(), [](const std::string& t) {
                       return t.find('\t') != std::string::npos;
                     });
  for (const std::string& text : args.texts) {
    if (!pairs) {
      request.add_texts(text);
      continue;
    }
    const size_t tab = text.find('\t');
    auto* pair = request.add_pairs();
    pair->set_source(text.substr(0, tab));
    pair->set_target(text.substr(tab + 1));
  }
  grpc::ClientContext context;
  PrepareCall(&context, args);
  v1::ScoreResponse response;
  const grpc::Status status = stub.Score(&context, request, &response);
  if (!status.ok() && !pairs && status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    std::cerr << "(a translation model scores pairs: give each text as SOURCE<TAB>TARGET)\n";
  }
  if (!status.ok()) return Fail(status);
  if (args.json) {
    PrintJson(response);
    return 0;
  }
  for (int i = 0; i < response.results_size(); ++i) {
    const auto& r = response.results(i);
    if (i > 0) std::cout << "\n";
    for (const auto& t : r.tokens()) std::printf("%-16s %9.4f\n", t.token().c_str(), t.logprob());
    std::printf("total_logprob %.4f  tokens %d  perplexity %.3f\n", r.total_logprob(),
                r.tokens_size(), r.perplexity());
  }
  return 0;
}

int Generate(v1::NormServe::Stub& stub, const Args& args) {
  v1::GenerateRequest request;
  request.set_model(args.model);
  request.set_prompt(args.texts.empty() ? "" : args.texts.front());
  if (args.version) request.set_version(*args.version);
  if (args.priority) request.set_priority(*args.priority);
  auto* options = request.mutable_options();
  if (args.temperature) options->set_temperature(*args.temperature);
  if (args.top_k) options->set_top_k(*args.top_k);
  if (args.top_p) options->set_top_p(*args.top_p);
  if (args.seed) options->set_seed(*args.seed);
  if (args.max_new_tokens) options->set_max_new_tokens(*args.max_new_tokens);
  if (args.stop) options->add_stop(*args.stop);

  grpc::ClientContext context;
  PrepareCall(&context, args);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse piece;
  std::string finish;
  while (reader->Read(&piece)) {
    if (args.json) {
      PrintJson(piece);
    } else {
      std::cout << piece.text() << std::flush;
    }
    if (!piece.finish_reason().empty()) finish = piece.finish_reason();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (!args.json) std::cout << "\n";
    return Fail(status);
  }
  if (!args.json) std::cout << "\n";
  std::cerr << "[" << finish << "]\n";
  return 0;
}

int LoadOrUnload(v1::NormServe::Stub& stub, const Args& args, bool load) {
  grpc::ClientContext context;
  PrepareCall(&context, args);
  grpc::Status status;
  if (load) {
    v1::LoadModelRequest request;
    request.set_model(args.texts.front());
    v1::ModelInfo info;
    status = stub.LoadModel(&context, request, &info);
    if (status.ok()) {
      if (args.json) {
        PrintJson(info);
      } else {
        std::cout << "loaded " << info.name() << " version " << info.version() << " ("
                  << info.norm() << ")\n";
      }
    }
  } else {
    v1::UnloadModelRequest request;
    request.set_model(args.texts.front());
    v1::UnloadModelResponse response;
    status = stub.UnloadModel(&context, request, &response);
    if (status.ok() && !args.json) std::cout << "unloaded " << args.texts.front() << "\n";
  }
  return status.ok() ? 0 : Fail(status);
}

int Models(v1::NormServe::Stub& stub, const Args& args) {
  grpc::ClientContext context;
  PrepareCall(&context, args);
  v1::ListModelsResponse response;
  const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return Fail(status);
  if (args.json) {
    PrintJson(response);
    return 0;
  }
  std::printf("%-20s %-8s %-15s %-24s %s\n", "MODEL", "VERSION", "ARCHITECTURE", "NORM", "STATE");
  for (const auto& m : response.models()) {
    std::printf("%-20s %-8lld %-15s %-24s %s%s\n", m.name().c_str(),
                static_cast<long long>(m.version()), m.architecture().c_str(), m.norm().c_str(),
                ModelStateName(m.state()).c_str(),
                m.error().empty() ? "" : ("  " + m.error()).c_str());
  }
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel, const Args& args) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(args.service);
  grpc::ClientContext context;
  PrepareCall(&context, args);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(status);
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (args.json) {
    PrintJson(response);
  } else {
    std::cout << name << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Run(const Args& args) {
  auto channel = client::MakeChannel(args.server, args.tls, grpc::ChannelArguments());
  auto stub = v1::NormServe::NewStub(channel);
  if (args.command == "translate") return Translate(*stub, args);
  if (args.command == "score") return Score(*stub, args);
  if (args.command == "generate") return Generate(*stub, args);
  if (args.command == "load") return LoadOrUnload(*stub, args, true);
  if (args.command == "unload") return LoadOrUnload(*stub, args, false);
  if (args.command == "models") return Models(*stub, args);
  return Health(channel, args);
}

}  // namespace
}  // namespace normserve::cli

int main(int argc, char** argv) {
  using namespace normserve::cli;
  Args args;
  if (const auto exit_status = ParseArgs(argc, argv, &args)) return *exit_status;
  try {
    const bool takes_texts = args.command == "translate" || args.command == "score";
    // generate reads its prompt from stdin only when asked with "-".
    if (args.command == "generate" && args.texts.size() == 1 && args.texts[0] == "-") {
      args.texts[0].assign(std::istreambuf_iterator<char>(std::cin), {});
    }
    if (!args.token_file.empty()) {
      args.token = normserve::client::ReadTokenFile(args.token_file);
    }
    if (takes_texts && args.texts.empty()) {
      for (std::string line; std::getline(std::cin, line);) args.texts.push_back(line);
    }
    return Run(args);
  } catch (const std::invalid_argument& e) {
    std::cerr << "normserve: " << e.what() << "\n";
    return normserve::command_line::kUsageError;
  } catch (const std::runtime_error& e) {
    std::cerr << "normserve: error: " << e.what() << "\n";
    return 1;
  }
}
