#include "server/kserve_json.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "server/kserve_tensors.h"
#include "server/names.h"

namespace normserve::kserve {
namespace {

using nlohmann::json;

// Nested arrays of a tensor's "data" deeper than this are refused.
constexpr int kMaxDataDepth = 16;

grpc::Status BadRequest(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// The header's value as a byte count: decimal digits only (std::stoull would take a sign
// and leading spaces); nullopt otherwise.
std::optional<size_t> ParseLength(const std::string& value) {
  if (value.empty() || value.size() > 18 ||
      !std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return std::nullopt;
  }
  return static_cast<size_t>(std::stoull(value));
}

// The request's parameters (JSON object) as the protocol's parameters.
grpc::Status ReadParameters(const json& object,
                            google::protobuf::Map<std::string, inference::InferParameter>* out) {
  if (!object.is_object()) return BadRequest("\"parameters\" must be an object");
  for (const auto& [name, value] : object.items()) {
    inference::InferParameter& p = (*out)[name];
    if (value.is_boolean()) {
      p.set_bool_param(value.get<bool>());
    } else if (value.is_number_unsigned() &&
               value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      p.set_uint64_param(value.get<uint64_t>());
    } else if (value.is_number_integer()) {
      p.set_int64_param(value.get<int64_t>());
    } else if (value.is_number_float()) {
      p.set_double_param(value.get<double>());
    } else if (value.is_string()) {
      p.set_string_param(value.get<std::string>());
    } else {
      return BadRequest("parameter " + QuoteInput(name) +
                        " must be a boolean, a number or a string");
    }
  }
  return grpc::Status::OK;
}

// A tensor's "data", flattened in row-major order, as BYTES elements.
grpc::Status FlattenStrings(const json& data, int depth, std::vector<std::string>* out) {
  if (data.is_string()) {
    out->push_back(data.get<std::string>());
    return grpc::Status::OK;
  }
  if (!data.is_array()) return BadRequest("the data of a BYTES tensor are strings");
  if (depth >= kMaxDataDepth) {
    return BadRequest("\"data\" is nested more than " + std::to_string(kMaxDataDepth) +
                      " arrays deep");
  }
  for (const auto& element : data) {
    if (grpc::Status s = FlattenStrings(element, depth + 1, out); !s.ok()) return s;
  }
  return grpc::Status::OK;
}

// One element of "inputs" into `request`; `binary_at`: where the next input's bytes begin
// in `body`'s binary part.
grpc::Status ReadInput(const json& in, std::string_view body, size_t* binary_at,
                       inference::ModelInferRequest* request) {
  if (!in.is_object() || !in.contains("name") || !in["name"].is_string() ||
      !in.contains("datatype") || !in["datatype"].is_string() || !in.contains("shape") ||
      !in["shape"].is_array()) {
    return BadRequest("each input is an object with \"name\", \"datatype\" and \"shape\"");
  }
  auto* input = request->add_inputs();
  input->set_name(in["name"].get<std::string>());
  input->set_datatype(in["datatype"].get<std::string>());
  const std::string quoted = QuoteInput(input->name());
  for (const json& d : in["shape"]) {
    // An unsigned one above int64's range would read as a negative dimension.
    if (!d.is_number_integer() ||
        (d.is_number_unsigned() &&
         d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      return BadRequest("input " + quoted + ": a shape is an array of integers");
    }
    input->add_shape(d.get<int64_t>());
  }
  std::string* raw = request->add_raw_input_contents();
  const json* size = nullptr;
  if (in.contains("parameters") && in["parameters"].is_object() &&
      in["parameters"].contains("binary_data_size")) {
    size = &in["parameters"]["binary_data_size"];
  }
  if (size != nullptr) {
    if (!size->is_number_unsigned() || size->get<uint64_t>() > body.size() - *binary_at) {
      return BadRequest("input " + quoted + ": binary_data_size must be a length within the " +
                        std::to_string(body.size() - *binary_at) +
                        " bytes of the binary part left");
    }
    raw->assign(body.substr(*binary_at, size->get<uint64_t>()));
    *binary_at += size->get<uint64_t>();
  } else if (input->datatype() == "BYTES") {
    if (!in.contains("data")) return BadRequest("input " + quoted + " has no \"data\"");
    std::vector<std::string> elements;
    if (grpc::Status s = FlattenStrings(in["data"], 0, &elements); !s.ok()) return s;
    *raw = EncodeBytes(elements);
  }
  // Other datatypes stay empty: no model takes them, and the call says so.
  return grpc::Status::OK;
}

grpc::Status ReadOutputs(const json& outputs, inference::ModelInferRequest* request,
                         BinaryOutputs* binary) {
  if (!outputs.is_array()) return BadRequest("\"outputs\" must be an array");
  for (const json& out : outputs) {
    if (!out.is_object() || !out.contains("name") || !out["name"].is_string()) {
      return BadRequest("each output is an object with a \"name\"");
    }
    const std::string name = out["name"].get<std::string>();
    request->add_outputs()->set_name(name);
    bool wanted = binary->by_default;
    if (out.contains("parameters") && out["parameters"].is_object() &&
        out["parameters"].contains("binary_data")) {
      wanted = out["parameters"]["binary_data"].is_boolean() &&
               out["parameters"]["binary_data"].get<bool>();
    }
    binary->by_name[name] = wanted;
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status ReadJsonInferRequest(std::string_view body,
                                  const std::optional<std::string>& header_length,
                                  inference::ModelInferRequest* request, BinaryOutputs* binary) {
  size_t json_length = body.size();
  if (header_length) {
    const std::optional<size_t> n = ParseLength(*header_length);
    if (!n || *n > body.size()) {
      return BadRequest(std::string(kHeaderLength) + " is " + QuoteInput(*header_length) +
                        "; it must be the length of the JSON part, at most the body's " +
                        std::to_string(body.size()) + " bytes");
    }
    json_length = *n;
  }
  const json parsed = json::parse(body.begin(), body.begin() + json_length, nullptr,
                                  /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return BadRequest("the request body is not a JSON object (or not UTF-8)");
  }
  if (parsed.contains("id")) {
    if (!parsed["id"].is_string()) return BadRequest("\"id\" must be a string");
    request->set_id(parsed["id"].get<std::string>());
  }
  binary->by_default = false;
  if (parsed.contains("parameters")) {
    if (grpc::Status s = ReadParameters(parsed["parameters"], request->mutable_parameters());
        !s.ok()) {
      return s;
    }
    const auto& p = request->parameters();
    if (auto it = p.find("binary_data_output"); it != p.end()) {
      binary->by_default = it->second.bool_param();
    }
  }
  if (!parsed.contains("inputs") || !parsed["inputs"].is_array()) {
    return BadRequest("the request has no \"inputs\" array");
  }
  size_t binary_at = json_length;
  for (const json& in : parsed["inputs"]) {
    if (grpc::Status s = ReadInput(in, body, &binary_at, request); !s.ok()) return s;
  }
  if (parsed.contains("outputs")) {
    if (grpc::Status s = ReadOutputs(parsed["outputs"], request, binary); !s.ok()) return s;
  }
  return grpc::Status::OK;
}

}  // namespace normserve::kserve
