// The Open Inference Protocol's tensors as normserve.v1's messages: which normserve.v1 call a
// ModelInferRequest is (translate, score or generate), its texts and options, and the
// responses back as output tensors. Pure conversion, no gRPC calls; README "Open Inference
// Protocol" has the table.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "inference/grpc_service.pb.h"
#include "normserve/v1/normserve.pb.h"

namespace normserve::kserve {

enum class Task { kTranslate, kScore, kGenerate };

// One ModelInferRequest as a normserve.v1 request.
struct InferPlan {
  Task task = Task::kTranslate;
  v1::TranslateRequest translate;  // the one of the three that `task` names is filled
  v1::ScoreRequest score;
  v1::GenerateRequest generate;
  std::optional<std::chrono::microseconds> timeout;  // the `timeout` parameter
  std::vector<std::string> outputs;                  // asked for, in order; empty: all
};

// The version string of a request: "" or a positive integer; -1 when it is neither.
int64_t ParseVersion(const std::string& version);

// Plans `request` for a model of the given architecture. `streaming`: it came on
// ModelStreamInfer, where a language model generates by default. INVALID_ARGUMENT with what to
// fix when the request cannot be one of the model's calls.
grpc::Status PlanInfer(const inference::ModelInferRequest& request, bool is_mt, bool streaming,
                       InferPlan* plan);

// The output tensors of a finished call, in the raw form tritonclient reads
// (raw_output_contents), the ones `outputs` names (all when empty) in that order.
grpc::Status FillTranslateOutputs(const v1::TranslateResponse& result,
                                  const std::vector<std::string>& outputs,
                                  inference::ModelInferResponse* response);
grpc::Status FillScoreOutputs(const v1::ScoreResponse& result,
                              const std::vector<std::string>& outputs,
                              inference::ModelInferResponse* response);
// `text`: the generated text (or one streamed piece); `last`: the message with the finish
// reason and token count, whose FINISH_REASON and TOKEN_COUNT are filled too.
grpc::Status FillGenerateOutputs(const std::string& text, const v1::GenerateResponse* last,
                                 const std::vector<std::string>& outputs,
                                 inference::ModelInferResponse* response);

// The inputs and outputs a model of this architecture declares.
void DescribeModel(const v1::ModelInfo& info, inference::ModelMetadataResponse* metadata);
void DescribeModel(const v1::ModelInfo& info, inference::ModelConfig* config);

// BYTES tensors in the raw form: each element a 4-byte little-endian length, then its bytes.
std::string EncodeBytes(const std::vector<std::string>& elements);
// False (and *error says why) when `raw` is not a sequence of such elements, or has more than
// `max_elements` of them (each costs more memory than its 4 bytes: the count is checked as
// they are read).
bool DecodeBytes(const std::string& raw, size_t max_elements, std::vector<std::string>* elements,
                 std::string* error);

}  // namespace normserve::kserve
