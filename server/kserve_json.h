// The HTTP binding's inference request (a JSON body, with the binary tensor data extension's
// binary part after it) as a ModelInferRequest. Pure parsing of the client's bytes, apart
// from the HTTP server, so that it is fuzzed (tests/fuzz/kserve_json_fuzz.cc) and unit tested
// on its own.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "inference/grpc_service.pb.h"

namespace normserve::kserve {

// The header of the binary tensor data extension: the body's first N bytes are the JSON, the
// tensors' bytes follow.
inline constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

// Which outputs go back in the binary part rather than as JSON "data".
struct BinaryOutputs {
  std::map<std::string, bool> by_name;  // the outputs asked for by name
  bool by_default = false;              // the others (the binary_data_output parameter)
};

// `body`: the HTTP request body; `header_length`: the value of kHeaderLength, if sent. Every
// input goes into `request` in the raw form. INVALID_ARGUMENT with what to fix otherwise.
grpc::Status ReadJsonInferRequest(std::string_view body,
                                  const std::optional<std::string>& header_length,
                                  inference::ModelInferRequest* request, BinaryOutputs* binary);

}  // namespace normserve::kserve
