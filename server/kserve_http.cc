#include "server/kserve_http.h"

#include <google/protobuf/util/json_util.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "inference/grpc_service.grpc.pb.h"
#include "server/bounded_http_server.h"
#include "server/kserve_json.h"
#include "server/kserve_tensors.h"

namespace normserve {
namespace {

using nlohmann::json;

using kserve::kHeaderLength;

// A request must arrive whole within this time after the server began waiting for it, idle
// keep-alive time included. Load generators (perf_analyzer's libcurl) leave connections idle
// between phases and then send on them, and a POST on a connection the server closed in
// the meantime fails instead of being retried: so the wait is long, and workers many.
constexpr auto kRequestTime = std::chrono::seconds(60);
constexpr auto kWriteTime = std::chrono::seconds(10);
// Requests on one connection before the server answers "Connection: close".
constexpr size_t kKeepAliveRequests = 10000;
// Room for the request line and headers beside the body.
constexpr size_t kHeaderBytes = 64 * 1024;
// Each connection holds a worker while it is open, and a worker waits for its inference call.
constexpr size_t kWorkers = 128;

int HttpStatus(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

std::string Dump(const json& value) {
  // Texts are the model's output; a piece of invalid UTF-8 must not fail the whole answer.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void SendJson(httplib::Response& response, int status, const json& body) {
  response.status = status;
  response.set_content(Dump(body), "application/json");
}

void SendError(httplib::Response& response, const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    response.set_header("WWW-Authenticate", "Bearer");
  }
  SendJson(response, HttpStatus(status.error_code()), {{"error", status.error_message()}});
}

grpc::Status BadRequest(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

template <typename T>
json Numbers(const std::string& raw) {
  std::vector<T> values(raw.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), raw.data(), values.size() * sizeof(T));
  return json(values);
}

json ParameterValue(const inference::InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case inference::InferParameter::kBoolParam:
      return p.bool_param();
    case inference::InferParameter::kInt64Param:
      return p.int64_param();
    case inference::InferParameter::kUint64Param:
      return p.uint64_param();
    case inference::InferParameter::kDoubleParam:
      return p.double_param();
    default:
      return p.string_param();
  }
}

// The response as JSON, and its binary part when some output goes back binary.
void WriteInferResponse(const inference::ModelInferResponse& result,
                        const kserve::BinaryOutputs& binary_outputs, httplib::Response& http) {
  json body = {{"model_name", result.model_name()},
               {"model_version", result.model_version()},
               {"outputs", json::array()}};
  if (!result.id().empty()) body["id"] = result.id();
  std::string binary;
  for (int i = 0; i < result.outputs_size(); ++i) {
    const auto& tensor = result.outputs(i);
    const std::string& raw = result.raw_output_contents(i);
    json out = {
        {"name", tensor.name()},
        {"datatype", tensor.datatype()},
        {"shape", json(std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()))}};
    const auto wanted = binary_outputs.by_name.find(tensor.name());
    if (wanted != binary_outputs.by_name.end() ? wanted->second : binary_outputs.by_default) {
      out["parameters"] = {{"binary_data_size", raw.size()}};
      binary += raw;
    } else if (tensor.datatype() == "BYTES") {
      std::vector<std::string> elements;
      std::string error;
      // The server's own encoding, of at most one element per 4 bytes.
      kserve::DecodeBytes(raw, raw.size() / 4, &elements, &error);
      out["data"] = elements;
    } else if (tensor.datatype() == "FP32") {
      out["data"] = Numbers<float>(raw);
    } else if (tensor.datatype() == "FP64") {
      out["data"] = Numbers<double>(raw);
    } else {
      out["data"] = Numbers<int64_t>(raw);
    }
    body["outputs"].push_back(std::move(out));
  }
  const std::string text = Dump(body);
  http.status = 200;
  if (binary.empty()) {
    http.set_content(text, "application/json");
  } else {
    http.set_header(kHeaderLength, std::to_string(text.size()));
    http.set_content(text + binary, "application/octet-stream");
  }
}

}  // namespace

class KServeHttpEndpoint::Routes {
 public:
  explicit Routes(std::shared_ptr<grpc::Channel> channel)
      : stub_(inference::GRPCInferenceService::NewStub(channel)) {}

  void Register(BoundedHttpServer& server) {
    const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
    server.Get("/v2", [this](const auto& q, auto& r) { ServerMetadata(q, r); });
    server.Get("/v2/health/live", [this](const auto& q, auto& r) { Health(q, r, true); });
    server.Get("/v2/health/ready", [this](const auto& q, auto& r) { Health(q, r, false); });
    server.Get(model, [this](const auto& q, auto& r) { ModelMetadata(q, r); });
    server.Get(model + "/ready", [this](const auto& q, auto& r) { ModelReady(q, r); });
    server.Get(model + "/config", [this](const auto& q, auto& r) { ModelConfig(q, r); });
    server.Post(model + "/infer", [this](const auto& q, auto& r) { Infer(q, r); });
    server.Post("/v2/repository/index", [this](const auto& q, auto& r) { Index(q, r); });
    server.Post(R"(/v2/repository/models/([^/]+)/(load|unload))",
                [this](const auto& q, auto& r) { LoadOrUnload(q, r); });
    server.set_error_handler([](const httplib::Request& q, httplib::Response& r) {
      // Routes that exist answer for themselves; this is what is left (404, 413, ...).
      if (r.body.empty()) {
        SendJson(r, r.status,
                 {{"error", r.status == 404   ? "no such path: the Open Inference Protocol's "
                                                "paths begin with /v2 (README)"
                            : r.status == 413 ? "the request body is larger than "
                                                "--max-message-bytes"
                                              : "the request could not be served"}});
      }
      (void)q;
    });
  }

 private:
  // A context for one call: the request's Authorization headers travel as its token.
  static void Prepare(const httplib::Request& http, grpc::ClientContext* context) {
    const size_t count = http.get_header_value_count("Authorization");
    for (size_t i = 0; i < count; ++i) {
      context->AddMetadata("authorization", http.get_header_value("Authorization", i));
    }
  }

  static std::string Version(const httplib::Request& http) {
    return http.matches.size() > 2 ? std::string(http.matches[2]) : std::string();
  }

  void ServerMetadata(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::ServerMetadataResponse result;
    const grpc::Status s = stub_->ServerMetadata(&context, {}, &result);
    if (!s.ok()) return SendError(response, s);
    SendJson(response, 200,
             {{"name", result.name()},
              {"version", result.version()},
              {"extensions",
               std::vector<std::string>(result.extensions().begin(), result.extensions().end())}});
  }

  void Health(const httplib::Request& http, httplib::Response& response, bool live) {
    grpc::ClientContext context;
    Prepare(http, &context);
    bool yes = false;
    grpc::Status s;
    if (live) {
      inference::ServerLiveResponse result;
      s = stub_->ServerLive(&context, {}, &result);
      yes = result.live();
    } else {
      inference::ServerReadyResponse result;
      s = stub_->ServerReady(&context, {}, &result);
      yes = result.ready();
    }
    if (!s.ok()) return SendError(response, s);
    SendJson(response, yes ? 200 : 503, {{live ? "live" : "ready", yes}});
  }

  void ModelReady(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::ModelReadyRequest request;
    request.set_name(http.matches[1]);
    request.set_version(Version(http));
    inference::ModelReadyResponse result;
    const grpc::Status s = stub_->ModelReady(&context, request, &result);
    if (!s.ok()) return SendError(response, s);
    SendJson(response, result.ready() ? 200 : 503, {{"ready", result.ready()}});
  }

  void ModelMetadata(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::ModelMetadataRequest request;
    request.set_name(http.matches[1]);
    request.set_version(Version(http));
    inference::ModelMetadataResponse result;
    const grpc::Status s = stub_->ModelMetadata(&context, request, &result);
    if (!s.ok()) return SendError(response, s);
    auto tensors = [](const auto& list) {
      json out = json::array();
      for (const auto& t : list) {
        out.push_back({{"name", t.name()},
                       {"datatype", t.datatype()},
                       {"shape", std::vector<int64_t>(t.shape().begin(), t.shape().end())}});
      }
      return out;
    };
    SendJson(
        response, 200,
        {{"name", result.name()},
         {"versions", std::vector<std::string>(result.versions().begin(), result.versions().end())},
         {"platform", result.platform()},
         {"inputs", tensors(result.inputs())},
         {"outputs", tensors(result.outputs())}});
  }

  void ModelConfig(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::ModelConfigRequest request;
    request.set_name(http.matches[1]);
    request.set_version(Version(http));
    inference::ModelConfigResponse result;
    const grpc::Status s = stub_->ModelConfig(&context, request, &result);
    if (!s.ok()) return SendError(response, s);
    // Triton's HTTP form of the configuration: protobuf's JSON with the field names.
    std::string text;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    google::protobuf::util::MessageToJsonString(result.config(), &text, options);
    response.status = 200;
    response.set_content(text, "application/json");
  }

  void Infer(const httplib::Request& http, httplib::Response& response) {
    inference::ModelInferRequest request;
    request.set_model_name(http.matches[1]);
    request.set_model_version(Version(http));
    kserve::BinaryOutputs binary_outputs;
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::ModelInferResponse result;
    std::optional<std::string> header_length;
    if (http.has_header(kHeaderLength)) header_length = http.get_header_value(kHeaderLength);
    grpc::Status s =
        kserve::ReadJsonInferRequest(http.body, header_length, &request, &binary_outputs);
    if (s.ok()) s = stub_->ModelInfer(&context, request, &result);
    if (!s.ok()) return SendError(response, s);
    WriteInferResponse(result, binary_outputs, response);
  }

  void Index(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    inference::RepositoryIndexRequest request;
    if (!http.body.empty()) {
      const json body = json::parse(http.body, nullptr, false);
      if (body.is_discarded() || !body.is_object()) {
        return SendError(response, BadRequest("the request body is not a JSON object"));
      }
      if (body.contains("ready"))
        request.set_ready(body["ready"].is_boolean() && body["ready"].get<bool>());
    }
    inference::RepositoryIndexResponse result;
    const grpc::Status s = stub_->RepositoryIndex(&context, request, &result);
    if (!s.ok()) return SendError(response, s);
    json out = json::array();
    for (const auto& m : result.models()) {
      json entry = {{"name", m.name()}, {"state", m.state()}};
      if (!m.version().empty()) entry["version"] = m.version();
      if (!m.reason().empty()) entry["reason"] = m.reason();
      out.push_back(std::move(entry));
    }
    SendJson(response, 200, out);
  }

  void LoadOrUnload(const httplib::Request& http, httplib::Response& response) {
    grpc::ClientContext context;
    Prepare(http, &context);
    grpc::Status s;
    if (http.matches[2] == "load") {
      inference::RepositoryModelLoadRequest request;
      request.set_model_name(http.matches[1]);
      inference::RepositoryModelLoadResponse result;
      s = stub_->RepositoryModelLoad(&context, request, &result);
    } else {
      inference::RepositoryModelUnloadRequest request;
      request.set_model_name(http.matches[1]);
      inference::RepositoryModelUnloadResponse result;
      s = stub_->RepositoryModelUnload(&context, request, &result);
    }
    if (!s.ok()) return SendError(response, s);
    response.status = 200;
  }

  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

KServeHttpEndpoint::KServeHttpEndpoint(const std::string& address,
                                       std::shared_ptr<grpc::Channel> channel,
                                       size_t max_body_bytes)
    : routes_(std::make_unique<Routes>(std::move(channel))),
      server_(std::make_unique<BoundedHttpServer>(HttpBounds{
          kRequestTime, max_body_bytes + kHeaderBytes, kWriteTime, kKeepAliveRequests, kWorkers})) {
  server_->set_payload_max_length(max_body_bytes);
  routes_->Register(*server_);
  port_ = server_->Bind(address, "HTTP (Open Inference Protocol)");
  server_->Start();
}

KServeHttpEndpoint::~KServeHttpEndpoint() { server_->Stop(); }

}  // namespace normserve
