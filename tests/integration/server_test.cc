// The real server in-process on 127.0.0.1:0, driven by real gRPC clients: the happy paths,
// health, reflection, every bad input with its status code, and the metrics scrape.
#include "server/server.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "grpc/health/v1/health.grpc.pb.h"
#include "normserve/v1/normserve.grpc.pb.h"
#include "tests/support/http_get.h"

namespace normserve {
namespace {

namespace v1 = normserve::v1;

// One server for the whole binary: a metrics exposer takes seconds to stop.
class ServerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ServerOptions options;
    options.model_repository = NORMSERVE_SOURCE_DIR "/models/repository";
    options.grpc_address = "127.0.0.1:0";
    options.metrics_address = "127.0.0.1:0";
    server = std::make_unique<NormServer>(options);
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server->grpc_port()),
                                  grpc::InsecureChannelCredentials());
  }
  void TearDown() override { server.reset(); }

  static inline std::unique_ptr<NormServer> server;
  static inline std::shared_ptr<grpc::Channel> channel;
};

class ServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<v1::NormServe::Stub> stub = v1::NormServe::NewStub(ServerEnvironment::channel);

  grpc::Status Translate(const v1::TranslateRequest& request, v1::TranslateResponse* response) {
    grpc::ClientContext context;
    return stub->Translate(&context, request, response);
  }
  grpc::Status Score(const v1::ScoreRequest& request, v1::ScoreResponse* response) {
    grpc::ClientContext context;
    return stub->Score(&context, request, response);
  }
  static v1::TranslateRequest TranslateOf(std::vector<std::string> texts) {
    v1::TranslateRequest request;
    request.set_model("deen");
    for (auto& t : texts) request.add_texts(t);
    return request;
  }
  // Asserts the code and that the message contains `says`.
  static void ExpectStatus(const grpc::Status& status, grpc::StatusCode code,
                           const std::string& says) {
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_NE(status.error_message().find(says), std::string::npos)
        << "message '" << status.error_message() << "' lacks '" << says << "'";
  }
};

TEST_F(ServerTest, TranslatesEveryTextInOrderWithNBest) {
  v1::TranslateRequest request = TranslateOf({"Guten Morgen", "ein großes Haus", "Danke"});
  request.mutable_options()->set_beam_size(4);
  request.mutable_options()->set_n_best(3);
  request.mutable_options()->set_return_tokens(true);
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(request, &response).ok());
  EXPECT_EQ(response.model(), "deen");
  EXPECT_EQ(response.version(), 1);
  EXPECT_EQ(response.norm(), "rmsnorm");
  ASSERT_EQ(response.translations_size(), 3);
  for (const auto& t : response.translations()) {
    ASSERT_EQ(t.hypotheses_size(), 3);
    for (int i = 1; i < 3; ++i) EXPECT_GE(t.hypotheses(i - 1).score(), t.hypotheses(i).score());
    EXPECT_LE(t.hypotheses(0).score(), 0.0f);
  }
  // The same text alone gets the same best translation as inside the batch.
  v1::TranslateResponse alone;
  ASSERT_TRUE(Translate(TranslateOf({"ein großes Haus"}), &alone).ok());
  v1::TranslateRequest single = TranslateOf({"ein großes Haus"});
  single.mutable_options()->set_beam_size(4);
  ASSERT_TRUE(Translate(single, &alone).ok());
  EXPECT_EQ(alone.translations(0).hypotheses(0).text(),
            response.translations(1).hypotheses(0).text());
}

TEST_F(ServerTest, ScoresLanguageModelTexts) {
  v1::ScoreRequest request;
  request.set_model("enlm");
  request.add_texts("the house is big");
  request.add_texts("good morning");
  v1::ScoreResponse response;
  ASSERT_TRUE(Score(request, &response).ok());
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.norm(), "layernorm");
  for (const auto& r : response.results()) {
    ASSERT_GE(r.tokens_size(), 2);
    EXPECT_EQ(r.tokens(r.tokens_size() - 1).token(), "</s>");
    double sum = 0;
    for (const auto& t : r.tokens()) {
      EXPECT_LT(t.logprob(), 0.0f);
      sum += t.logprob();
    }
    EXPECT_NEAR(sum, r.total_logprob(), 1e-3);
    EXPECT_NEAR(r.perplexity(), std::exp(-r.total_logprob() / r.tokens_size()),
                1e-3 * r.perplexity());
  }
}

TEST_F(ServerTest, ScoresTranslationPairs) {
  v1::ScoreRequest request;
  request.set_model("deen");
  auto* pair = request.add_pairs();
  pair->set_source("Haus");
  pair->set_target("house");
  v1::ScoreResponse response;
  ASSERT_TRUE(Score(request, &response).ok());
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_LT(response.results(0).total_logprob(), 0);
}

TEST_F(ServerTest, ListsAndDescribesModels) {
  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub->ListModels(&context, {}, &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  grpc::ClientContext get_context;
  v1::GetModelRequest get;
  get.set_model("deen");
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModel(&get_context, get, &info).ok());
  EXPECT_EQ(info.architecture(), "transformer_mt");
  EXPECT_TRUE(info.ready());
  EXPECT_EQ(info.state(), v1::MODEL_STATE_READY);
  EXPECT_GT(info.parameters(), 0u);
  EXPECT_EQ(info.norm_sites_size(), 6);  // 2 encoder, 3 decoder sites, final
}

TEST_F(ServerTest, HealthIsServing) {
  auto health = grpc::health::v1::Health::NewStub(ServerEnvironment::channel);
  for (const std::string service : {"", "normserve.v1.NormServe"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

// Reflection through a generic stub: the request is hand-encoded (field 7 list_services =
// "*") and the response decoded with the descriptor the server's reflection library carries.
TEST_F(ServerTest, ReflectionListsTheService) {
  grpc::GenericStub generic(ServerEnvironment::channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  auto call = generic.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto wait = [&cq](intptr_t expected) {
    void* tag = nullptr;
    bool ok = false;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    ASSERT_EQ(reinterpret_cast<intptr_t>(tag), expected);
    ASSERT_TRUE(ok) << "step " << expected;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  wait(1);
  const std::string request_bytes("\x3a\x01*", 3);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  wait(2);
  call->WritesDone(reinterpret_cast<void*>(3));
  wait(3);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  wait(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  wait(5);
  ASSERT_TRUE(status.ok()) << status.error_message();

  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  const auto* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          "grpc.reflection.v1alpha.ServerReflectionResponse");
  ASSERT_NE(descriptor, nullptr);
  google::protobuf::DynamicMessageFactory factory;
  std::unique_ptr<google::protobuf::Message> message(factory.GetPrototype(descriptor)->New());
  ASSERT_TRUE(message->ParseFromString(bytes));
  const std::string text = message->DebugString();
  EXPECT_NE(text.find("name: \"normserve.v1.NormServe\""), std::string::npos) << text;
  EXPECT_NE(text.find("name: \"grpc.health.v1.Health\""), std::string::npos) << text;
}

TEST_F(ServerTest, UnknownModelIsNotFoundAndListsModels) {
  v1::TranslateRequest request = TranslateOf({"Hallo"});
  request.set_model("nope");
  v1::TranslateResponse response;
  const grpc::Status status = Translate(request, &response);
  ExpectStatus(status, grpc::StatusCode::NOT_FOUND, "'nope'");
  ExpectStatus(status, grpc::StatusCode::NOT_FOUND, "deen, enlm");
  grpc::ClientContext context;
  v1::GetModelRequest get;
  get.set_model("nope");
  v1::ModelInfo info;
  ExpectStatus(stub->GetModel(&context, get, &info), grpc::StatusCode::NOT_FOUND, "deen, enlm");
}

TEST_F(ServerTest, BadTranslateInputsAreInvalidArgumentWithTheLimit) {
  v1::TranslateResponse response;
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  ExpectStatus(Translate(TranslateOf({}), &response), invalid, "empty");
  ExpectStatus(Translate(TranslateOf({"Hallo", ""}), &response), invalid, "text 1 is empty");
  ExpectStatus(Translate(TranslateOf({std::string("ab\xff", 3)}), &response), invalid,
               "not valid UTF-8 (bad byte at offset 2)");
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "Haus ";
  ExpectStatus(Translate(TranslateOf({long_text}), &response), invalid, "at most 255");

  const auto with = [](auto set) {
    v1::TranslateRequest request = TranslateOf({"Hallo"});
    set(request.mutable_options());
    return request;
  };
  ExpectStatus(Translate(with([](auto* o) { o->set_beam_size(0); }), &response), invalid, "1..64");
  ExpectStatus(Translate(with([](auto* o) { o->set_beam_size(65); }), &response), invalid, "1..64");
  ExpectStatus(Translate(with([](auto* o) { o->set_length_penalty(-1); }), &response), invalid,
               "length_penalty");
  ExpectStatus(Translate(with([](auto* o) {
                           o->set_beam_size(2);
                           o->set_n_best(3);
                         }),
                         &response),
               invalid, "n_best");
  ExpectStatus(Translate(with([](auto* o) { o->set_max_length_a(-2); }), &response), invalid,
               "max_length_a");

  v1::TranslateRequest lm = TranslateOf({"hello"});
  lm.set_model("enlm");
  ExpectStatus(Translate(lm, &response), invalid, "transformer_lm");
  v1::TranslateRequest nameless = TranslateOf({"hello"});
  nameless.clear_model();
  ExpectStatus(Translate(nameless, &response), invalid, "names no model");
}

TEST_F(ServerTest, BadScoreInputsAreInvalidArgument) {
  v1::ScoreResponse response;
  const auto invalid = grpc::StatusCode::INVALID_ARGUMENT;
  v1::ScoreRequest empty;
  empty.set_model("enlm");
  ExpectStatus(Score(empty, &response), invalid, "empty");
  v1::ScoreRequest pairs_to_lm;
  pairs_to_lm.set_model("enlm");
  pairs_to_lm.add_pairs()->set_source("a");
  ExpectStatus(Score(pairs_to_lm, &response), invalid, "score texts");
  v1::ScoreRequest texts_to_mt;
  texts_to_mt.set_model("deen");
  texts_to_mt.add_texts("a");
  ExpectStatus(Score(texts_to_mt, &response), invalid, "pairs");
  v1::ScoreRequest bad_target;
  bad_target.set_model("deen");
  bad_target.add_pairs()->set_source("Haus");
  ExpectStatus(Score(bad_target, &response), invalid, "pair 0 target is empty");
}

TEST_F(ServerTest, MetricsShowRequestsWithModelAndNormLabels) {
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(TranslateOf({"Guten Abend"}), &response).ok());
  const std::string metrics =
      testing::HttpGet(ServerEnvironment::server->metrics_port(), "/metrics");
  for (const std::string expected :
       {"normserve_requests_total{code=\"OK\",model=\"deen\",norm=\"rmsnorm\",rpc=\"Translate\","
        "version=\"1\"}",
        "normserve_request_duration_seconds_count{model=\"deen\",norm=\"rmsnorm\",rpc="
        "\"Translate\"}",
        "normserve_model_ready{model=\"deen\",norm=\"rmsnorm\",version=\"1\"} 1",
        "normserve_model_ready{model=\"enlm\",norm=\"layernorm\",version=\"1\"} 1",
        // A translation runs dozens of decoder forwards; one in 16 is timed.
        "normserve_norm_duration_seconds_count{device=\"cpu\",dtype=\"float32\",norm="
        "\"rmsnorm\"}"}) {
    EXPECT_NE(metrics.find(expected), std::string::npos) << expected << "\n" << metrics;
  }
}

}  // namespace
}  // namespace normserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new normserve::ServerEnvironment);
  return RUN_ALL_TESTS();
}
