// The serving core through real gRPC: hot reload under load, a corrupt version that must not
// replace a serving one, explicit load/unload with the name checks, variant groups, Generate
// streaming, and answers matched to concurrent callers.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "models/io/model_init.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "server/server.h"
#include "tests/support/http_get.h"

namespace normserve {
namespace {

namespace fs = std::filesystem;
namespace v1 = normserve::v1;
using namespace std::chrono_literals;

const fs::path kBundled = NORMSERVE_SOURCE_DIR "/models/repository";

class TempRepository {
 public:
  TempRepository() {
    root_ =
        fs::temp_directory_path() / ("normserve-serving-" + std::to_string(std::random_device{}()));
    fs::create_directories(root_);
  }
  ~TempRepository() { fs::remove_all(root_); }
  void CopyVersion(const std::string& from_model, const std::string& to_model, int version) {
    const fs::path dir = root_ / to_model / std::to_string(version);
    fs::create_directories(dir);
    for (const auto& f : fs::directory_iterator(kBundled / from_model / "1")) {
      fs::copy_file(f.path(), dir / f.path().filename());
    }
  }
  void WriteFile(const fs::path& relative, const std::string& text) {
    fs::create_directories((root_ / relative).parent_path());
    std::ofstream(root_ / relative) << text;
  }
  const fs::path& root() const { return root_; }

 private:
  fs::path root_;
};

std::unique_ptr<NormServer> StartServer(const fs::path& repository, ModelControl control) {
  ServerOptions options;
  options.model_repository = repository.string();
  options.grpc_address = "127.0.0.1:0";
  options.metrics_address = "127.0.0.1:0";
  options.model_control = control;
  options.allow_unauthenticated_admin = true;  // no tokens: admin RPCs open, as for local use
  options.repository_poll_secs = 0.2;
  return std::make_unique<NormServer>(options);
}

std::unique_ptr<v1::NormServe::Stub> Connect(const NormServer& server) {
  return v1::NormServe::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(server.grpc_port()), grpc::InsecureChannelCredentials()));
}

v1::TranslateRequest ShortTranslate(const std::string& model, const std::string& text) {
  v1::TranslateRequest request;
  request.set_model(model);
  request.add_texts(text);
  request.mutable_options()->set_beam_size(1);
  request.mutable_options()->set_max_length_a(0);
  request.mutable_options()->set_max_length_b(4);
  return request;
}

TEST(ServingCoreTest, HotReloadUnderLoadLosesNoRequestAndSwitchesVersion) {
  TempRepository repo;
  repo.CopyVersion("deen", "deen", 1);
  auto server = StartServer(repo.root(), ModelControl::kPoll);
  auto stub = Connect(*server);

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::mutex mutex;
  std::vector<std::string> failures;
  std::vector<int64_t> versions;
  std::thread client([&] {
    while (!stop) {
      grpc::ClientContext context;
      v1::TranslateResponse response;
      const grpc::Status status =
          stub->Translate(&context, ShortTranslate("deen", "Guten Morgen"), &response);
      std::lock_guard<std::mutex> lock(mutex);
      if (!status.ok()) {
        failures.push_back(status.error_message());
      } else {
        ++ok;
        versions.push_back(response.version());
      }
    }
  });
  std::this_thread::sleep_for(300ms);
  // Copy version 2 slowly, the weights last and in two halves, as a real copy would.
  const fs::path v2 = repo.root() / "deen" / "2";
  fs::create_directories(v2);
  for (const auto& f : fs::directory_iterator(kBundled / "deen" / "1")) {
    if (f.path().filename() != "model.safetensors")
      fs::copy_file(f.path(), v2 / f.path().filename());
  }
  std::ifstream weights(kBundled / "deen" / "1" / "model.safetensors", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(weights)), {});
  {
    std::ofstream out(v2 / "model.safetensors", std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    out.flush();
    std::this_thread::sleep_for(700ms);  // several polls see a half-written file
    out.write(bytes.data() + bytes.size() / 2,
              static_cast<std::streamsize>(bytes.size() - bytes.size() / 2));
  }
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  bool switched = false;
  while (!switched && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    std::lock_guard<std::mutex> lock(mutex);
    switched = !versions.empty() && versions.back() == 2;
  }
  std::this_thread::sleep_for(200ms);
  stop = true;
  client.join();
  EXPECT_TRUE(switched) << "responses never came from version 2";
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures.front();
  EXPECT_GT(ok, 10);
  // Versions only move forward: 1 ... 1 2 ... 2.
  EXPECT_TRUE(std::is_sorted(versions.begin(), versions.end()));
  EXPECT_EQ(versions.front(), 1);
}

TEST(ServingCoreTest, ACorruptNewVersionKeepsTheOldServingWithTheReasonInGetModel) {
  TempRepository repo;
  repo.CopyVersion("deen", "deen", 1);
  auto server = StartServer(repo.root(), ModelControl::kPoll);
  auto stub = Connect(*server);
  repo.CopyVersion("deen", "deen", 2);
  fs::resize_file(repo.root() / "deen" / "2" / "model.safetensors", 1000);
  std::this_thread::sleep_for(1500ms);  // several polls

  grpc::ClientContext context;
  v1::GetModelRequest get;
  get.set_model("deen");
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModel(&context, get, &info).ok());
  EXPECT_EQ(info.state(), v1::MODEL_STATE_READY);
  EXPECT_EQ(info.version(), 1);
  EXPECT_NE(info.error().find("model.safetensors"), std::string::npos) << info.error();
  grpc::ClientContext translate_context;
  v1::TranslateResponse response;
  ASSERT_TRUE(stub->Translate(&translate_context, ShortTranslate("deen", "Hallo"), &response).ok());
  EXPECT_EQ(response.version(), 1);
  const std::string metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("normserve_model_load_failures_total{model=\"deen\"} 1"),
            std::string::npos)
      << metrics;
}

TEST(ServingCoreTest, ExplicitLoadAndUnloadWithNameChecks) {
  TempRepository repo;
  repo.CopyVersion("enlm", "enlm", 1);
  auto server = StartServer(repo.root(), ModelControl::kExplicit);
  auto stub = Connect(*server);
  const auto load = [&](const std::string& name, v1::ModelInfo* info) {
    grpc::ClientContext context;
    v1::LoadModelRequest request;
    request.set_model(name);
    return stub->LoadModel(&context, request, info);
  };
  const auto unload = [&](const std::string& name) {
    grpc::ClientContext context;
    v1::UnloadModelRequest request;
    request.set_model(name);
    v1::UnloadModelResponse response;
    return stub->UnloadModel(&context, request, &response);
  };
  const auto score = [&]() {
    grpc::ClientContext context;
    v1::ScoreRequest request;
    request.set_model("enlm");
    request.add_texts("hello");
    v1::ScoreResponse response;
    return stub->Score(&context, request, &response);
  };
  v1::ModelInfo info;
  for (const std::string bad : {"../enlm", "/etc", "a/b", "..", ""}) {
    EXPECT_EQ(load(bad, &info).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(unload(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  EXPECT_EQ(load("nope", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(unload("enlm").ok());
  const grpc::Status unloaded = score();
  EXPECT_EQ(unloaded.error_code(), grpc::StatusCode::NOT_FOUND);  // not retryable
  EXPECT_NE(unloaded.error_message().find("unloaded"), std::string::npos);
  // A model copied in after start is loaded on request.
  repo.CopyVersion("deen", "late", 1);
  ASSERT_TRUE(load("late", &info).ok());
  EXPECT_EQ(info.name(), "late");
  EXPECT_TRUE(info.ready());
  ASSERT_TRUE(load("enlm", &info).ok());
  EXPECT_TRUE(score().ok());

  auto polling = StartServer(repo.root(), ModelControl::kPoll);
  auto poll_stub = Connect(*polling);
  grpc::ClientContext context;
  v1::LoadModelRequest request;
  request.set_model("enlm");
  EXPECT_EQ(poll_stub->LoadModel(&context, request, &info).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST(ServingCoreTest, AVariantGroupRoutesByWeightAndSaysWhichMemberServed) {
  TempRepository repo;
  repo.CopyVersion("deen", "deen_rms", 1);
  repo.WriteFile("deen_rms/model.json", R"({"group": "deen", "weight": 1})");
  // A LayerNorm member with the same vocabulary sizes, made by the project's own tool.
  const fs::path texts = repo.root() / "texts.txt";
  {
    std::ofstream out(texts);
    for (int i = 0; i < 200; ++i) out << "das Haus " << i << " ist gross und alt\n";
  }
  ModelInitOptions init;
  init.config_json = R"({"architecture": "transformer_mt", "embed_dim": 32, "ffn_dim": 64,
      "attention_heads": 2, "encoder_layers": 1, "decoder_layers": 1, "max_positions": 64,
      "norm": {"default": {"type": "layernorm"}}})";
  init.out_dir = (repo.root() / "deen_ln" / "1").string();
  init.source_text = init.target_text = texts.string();
  init.vocab_size = 100;
  InitModelDirectory(init);
  fs::remove(texts);
  repo.WriteFile("deen_ln/model.json", R"({"group": "deen", "weight": 1})");
  auto server = StartServer(repo.root(), ModelControl::kNone);
  auto stub = Connect(*server);

  std::map<std::string, std::string> norm_of;
  for (int i = 0; i < 60; ++i) {
    grpc::ClientContext context;
    v1::TranslateResponse response;
    ASSERT_TRUE(stub->Translate(&context, ShortTranslate("deen", "das Haus"), &response).ok());
    norm_of[response.model()] = response.norm();
  }
  ASSERT_EQ(norm_of.size(), 2u);
  EXPECT_EQ(norm_of["deen_rms"], "rmsnorm");
  EXPECT_EQ(norm_of["deen_ln"], "layernorm");
  const std::string metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("model=\"deen_ln\",norm=\"layernorm\",rpc=\"Translate\""),
            std::string::npos);
  EXPECT_NE(metrics.find("model=\"deen_rms\",norm=\"rmsnorm\",rpc=\"Translate\""),
            std::string::npos);
}

std::pair<std::string, std::string> GenerateText(v1::NormServe::Stub& stub, uint64_t seed,
                                                 int* pieces) {
  grpc::ClientContext context;
  v1::GenerateRequest request;
  request.set_model("enlm");
  request.set_prompt("the house");
  request.mutable_options()->set_seed(seed);
  request.mutable_options()->set_max_new_tokens(12);
  request.mutable_options()->set_temperature(1.0f);
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse piece;
  std::string text, finish;
  *pieces = 0;
  while (reader->Read(&piece)) {
    text += piece.text();
    if (!piece.text().empty()) ++*pieces;
    if (!piece.finish_reason().empty()) finish = piece.finish_reason();
  }
  EXPECT_TRUE(reader->Finish().ok());
  return {text, finish};
}

TEST(ServingCoreTest, GenerateStreamsAndItsSeedReproduces) {
  TempRepository repo;
  repo.CopyVersion("enlm", "enlm", 1);
  auto server = StartServer(repo.root(), ModelControl::kNone);
  auto stub = Connect(*server);
  int pieces = 0;
  const auto [first, finish] = GenerateText(*stub, 42, &pieces);
  EXPECT_GT(pieces, 1) << "the text should arrive in pieces";
  EXPECT_FALSE(first.empty());
  EXPECT_TRUE(finish == "length" || finish == "eos") << finish;
  EXPECT_EQ(GenerateText(*stub, 42, &pieces).first, first);
  std::set<std::string> others;
  for (uint64_t seed : {1, 2, 3}) others.insert(GenerateText(*stub, seed, &pieces).first);
  EXPECT_GT(others.size(), 1u) << "different seeds gave one text";

  grpc::ClientContext context;
  v1::GenerateRequest bad;
  bad.set_model("enlm");
  bad.mutable_options()->set_top_p(0);
  auto reader = stub->Generate(&context, bad);
  v1::GenerateResponse piece;
  while (reader->Read(&piece)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("top_p"), std::string::npos);
}

TEST(ServingCoreTest, ConcurrentCallersEachGetTheirOwnAnswer) {
  TempRepository repo;
  repo.CopyVersion("enlm", "enlm", 1);
  auto server = StartServer(repo.root(), ModelControl::kNone);
  auto stub = Connect(*server);
  const std::vector<std::string> texts = {"the house",    "a big dog runs home",
                                          "good morning", "it is not possible",
                                          "the cat",      "one two three four five"};
  const auto score = [&](const std::string& text) {
    grpc::ClientContext context;
    v1::ScoreRequest request;
    request.set_model("enlm");
    request.add_texts(text);
    v1::ScoreResponse response;
    const grpc::Status status = stub->Score(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return status.ok() ? response.results(0).total_logprob() : std::nan("");
  };
  std::map<std::string, double> expected;
  for (const auto& t : texts) expected[t] = score(t);
  std::set<double> distinct;
  for (const auto& [t, s] : expected) distinct.insert(s);
  ASSERT_EQ(distinct.size(), texts.size()) << "the texts must score differently";

  std::atomic<int> wrong{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 25; ++i) {
        const std::string& text = texts[(c + i) % texts.size()];
        if (std::abs(score(text) - expected[text]) > 1e-3) ++wrong;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(wrong, 0);
  const std::string metrics = testing::HttpGet(server->metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("normserve_batch_size_count{model=\"enlm\"}"), std::string::npos);
}

}  // namespace
}  // namespace normserve
