// libFuzzer target for the Open Inference Protocol's raw BYTES form (server/kserve_tensors.cc):
// every input is a client's raw_input_contents entry. Decoding either fails with a reason or
// gives elements that encode back to the same bytes, and never reads more elements than
// asked for; a request carrying it as TEXT is planned exactly as the same elements in
// bytes_contents, into a normserve.v1 request that survives the in-process hop (its texts
// are bytes fields; normserve.v1 checks their UTF-8), or is refused with INVALID_ARGUMENT.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "server/kserve_tensors.h"

namespace {

using normserve::kserve::InferPlan;

void Check(bool ok) {
  if (!ok) std::abort();
}

// The message parses back after serializing, as it must to cross a gRPC channel.
template <typename Message>
void CheckCrossesChannel(const Message& message) {
  Message copy;
  Check(copy.ParseFromString(message.SerializeAsString()));
}

grpc::Status Plan(const inference::ModelInferRequest& request, InferPlan* plan) {
  const grpc::Status s = normserve::kserve::PlanInfer(request, /*is_mt=*/true,
                                                      /*streaming=*/false, plan);
  Check(s.ok() ||
        (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT && !s.error_message().empty()));
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string raw(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> elements;
  std::string error;
  const bool decoded = normserve::kserve::DecodeBytes(raw, raw.size(), &elements, &error);
  Check(decoded == error.empty());
  if (decoded) {
    Check(normserve::kserve::EncodeBytes(elements) == raw);
    if (!elements.empty()) {  // one element fewer than there are is refused
      std::vector<std::string> fewer;
      Check(!normserve::kserve::DecodeBytes(raw, elements.size() - 1, &fewer, &error));
      Check(fewer.size() == elements.size() - 1);
    }
  }

  inference::ModelInferRequest request;
  request.set_model_name("deen");
  auto* text = request.add_inputs();
  text->set_name("TEXT");
  text->set_datatype("BYTES");
  text->add_shape(decoded ? static_cast<int64_t>(elements.size()) : 1);
  *request.add_raw_input_contents() = raw;
  InferPlan from_raw;
  const grpc::Status s = Plan(request, &from_raw);
  if (!decoded) {
    Check(!s.ok());
    return 0;
  }
  // The same texts in bytes_contents.
  request.clear_raw_input_contents();
  for (const auto& e : elements) text->mutable_contents()->add_bytes_contents(e);
  InferPlan from_contents;
  const grpc::Status t = Plan(request, &from_contents);
  Check(s.ok() == t.ok() && s.error_message() == t.error_message());
  if (!s.ok()) return 0;
  Check(from_raw.translate.SerializeAsString() == from_contents.translate.SerializeAsString());
  Check(from_raw.translate.texts_size() == static_cast<int>(elements.size()));
  for (size_t i = 0; i < elements.size(); ++i) {
    Check(from_raw.translate.texts(static_cast<int>(i)) == elements[i]);
  }
  CheckCrossesChannel(from_raw.translate);
  return 0;
}
