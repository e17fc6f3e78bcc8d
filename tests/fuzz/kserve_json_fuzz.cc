// libFuzzer target for the Open Inference Protocol's HTTP inference request
// (server/kserve_json.cc): JSON tensors, parameters and the binary tensor data extension's
// header and binary_data_size offsets, then planning the request for a translation and for a
// language model (server/kserve_tensors.cc). An input is the header's value, a newline and the
// body; without a newline in its first 24 bytes, all of it is the body and no header is sent.
// Every refusal is INVALID_ARGUMENT with a message; whatever is accepted survives the
// in-process gRPC hops (protobuf strings must be UTF-8).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "server/kserve_json.h"
#include "server/kserve_tensors.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckRefusal(const grpc::Status& s) {
  Check(s.ok() ||
        (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT && !s.error_message().empty()));
}

template <typename Message>
void CheckCrossesChannel(const Message& message) {
  Message copy;
  Check(copy.ParseFromString(message.SerializeAsString()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::optional<std::string> header;
  if (const size_t newline = input.substr(0, 24).find('\n'); newline != std::string_view::npos) {
    header = std::string(input.substr(0, newline));
    input.remove_prefix(newline + 1);
  }
  inference::ModelInferRequest request;
  request.set_model_name("m");
  normserve::kserve::BinaryOutputs binary;
  const grpc::Status read =
      normserve::kserve::ReadJsonInferRequest(input, header, &request, &binary);
  CheckRefusal(read);
  if (!read.ok()) return 0;
  Check(request.raw_input_contents_size() == request.inputs_size());
  for (const auto& raw : request.raw_input_contents()) Check(raw.size() <= input.size() * 4 + 4);
  CheckCrossesChannel(request);  // the HTTP front end's call to the gRPC service

  for (const bool is_mt : {true, false}) {
    normserve::kserve::InferPlan plan;
    const grpc::Status s = normserve::kserve::PlanInfer(request, is_mt, size % 2 == 1, &plan);
    CheckRefusal(s);
    if (!s.ok()) continue;
    CheckCrossesChannel(plan.translate);
    CheckCrossesChannel(plan.score);
    CheckCrossesChannel(plan.generate);
  }
  return 0;
}
