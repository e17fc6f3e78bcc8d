#include "server/kserve_tensors.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "server/names.h"

namespace normserve::kserve {
namespace {

using InferParameter = inference::InferParameter;
using OutputTensor = inference::ModelInferResponse::InferOutputTensor;

grpc::Status Invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

const char* TaskName(Task task) {
  switch (task) {
    case Task::kTranslate:
      return "translate";
    case Task::kScore:
      return "score";
    case Task::kGenerate:
      return "generate";
  }
  return "";
}

// The outputs each task produces, in the order they are returned by default.
std::vector<std::string> TaskOutputs(Task task) {
  switch (task) {
    case Task::kTranslate:
      return {"TRANSLATION", "SCORE"};
    case Task::kScore:
      return {"LOGPROB", "PERPLEXITY", "TOKEN_COUNT", "LOGPROBS", "TOKENS"};
    case Task::kGenerate:
      return {"GENERATED", "FINISH_REASON", "TOKEN_COUNT"};
  }
  return {};
}

// A request parameter as a number, or a string that is one (tritonclient 2.41 sends no
// floating-point parameters); false otherwise.
bool AsNumber(const InferParameter& p, double* value) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kStringParam: {
      const std::string& text = p.string_param();
      char* end = nullptr;
      *value = std::strtod(text.c_str(), &end);
      return !text.empty() && end == text.c_str() + text.size();
    }
    case InferParameter::kInt64Param:
      *value = static_cast<double>(p.int64_param());
      return true;
    case InferParameter::kUint64Param:
      *value = static_cast<double>(p.uint64_param());
      return true;
    case InferParameter::kDoubleParam:
      *value = p.double_param();
      return true;
    default:
      return false;
  }
}

// Reads the options of normserve.v1 out of the request's parameters; the value ranges are
// checked by the call itself, as on normserve.v1, once they fit its fields.
class Parameters {
 public:
  explicit Parameters(const google::protobuf::Map<std::string, InferParameter>& map) : map_(map) {}

  bool Has(const std::string& name) const { return map_.count(name) > 0; }

  grpc::Status Number(const std::string& name, double* value) const {
    used_.insert(name);
    if (!AsNumber(map_.at(name), value) || !std::isfinite(*value)) {
      return Invalid("parameter " + name + " must be a number (or a string that is one)");
    }
    return grpc::Status::OK;
  }

  grpc::Status Integer(const std::string& name, double max, uint64_t* value) const {
    double v = 0;
    if (grpc::Status s = Number(name, &v); !s.ok()) return s;
    if (v < 0 || v > max || v != std::floor(v)) {
      return Invalid("parameter " + name + " must be an integer in 0.." +
                     std::to_string(static_cast<uint64_t>(max)));
    }
    *value = static_cast<uint64_t>(v);
    return grpc::Status::OK;
  }

  grpc::Status String(const std::string& name, std::string* value) const {
    used_.insert(name);
    const InferParameter& p = map_.at(name);
    if (p.parameter_choice_case() != InferParameter::kStringParam) {
      return Invalid("parameter " + name + " must be a string");
    }
    *value = p.string_param();
    return grpc::Status::OK;
  }

  // INVALID_ARGUMENT for a parameter no reader asked for.
  grpc::Status CheckAllUsed(Task task) const {
    for (const auto& [name, value] : map_) {
      if (!used_.count(name)) {
        return Invalid("parameter " + QuoteInput(name) + " means nothing to a " + TaskName(task) +
                       " request; README \"Open Inference Protocol\" lists the parameters");
      }
    }
    return grpc::Status::OK;
  }

  void Ignore(const std::string& name) const { used_.insert(name); }

 private:
  const google::protobuf::Map<std::string, InferParameter>& map_;
  mutable std::set<std::string> used_;
};

constexpr double kUint32Max = std::numeric_limits<uint32_t>::max();
// 2^53: every integer up to it is exact in the double a parameter is read as.
constexpr double kExactIntegerMax = 9007199254740992.0;

template <typename Options>
grpc::Status ReadUint32(const Parameters& p, const std::string& name, Options* options,
                        void (Options::*set)(uint32_t)) {
  if (!p.Has(name)) return grpc::Status::OK;
  uint64_t v = 0;
  if (grpc::Status s = p.Integer(name, kUint32Max, &v); !s.ok()) return s;
  (options->*set)(static_cast<uint32_t>(v));
  return grpc::Status::OK;
}

template <typename Options>
grpc::Status ReadFloat(const Parameters& p, const std::string& name, Options* options,
                       void (Options::*set)(float)) {
  if (!p.Has(name)) return grpc::Status::OK;
  double v = 0;
  if (grpc::Status s = p.Number(name, &v); !s.ok()) return s;
  (options->*set)(static_cast<float>(v));
  return grpc::Status::OK;
}

grpc::Status ReadTranslateOptions(const Parameters& p, v1::TranslateOptions* o) {
  for (grpc::Status s :
       {ReadUint32(p, "beam_size", o, &v1::TranslateOptions::set_beam_size),
        ReadUint32(p, "n_best", o, &v1::TranslateOptions::set_n_best),
        ReadFloat(p, "length_penalty", o, &v1::TranslateOptions::set_length_penalty),
        ReadFloat(p, "max_length_a", o, &v1::TranslateOptions::set_max_length_a),
        ReadUint32(p, "max_length_b", o, &v1::TranslateOptions::set_max_length_b)}) {
    if (!s.ok()) return s;
  }
  return grpc::Status::OK;
}

grpc::Status ReadGenerateOptions(const Parameters& p, v1::GenerateOptions* o) {
  for (grpc::Status s :
       {ReadFloat(p, "temperature", o, &v1::GenerateOptions::set_temperature),
        ReadUint32(p, "top_k", o, &v1::GenerateOptions::set_top_k),
        ReadFloat(p, "top_p", o, &v1::GenerateOptions::set_top_p),
        ReadUint32(p, "max_new_tokens", o, &v1::GenerateOptions::set_max_new_tokens)}) {
    if (!s.ok()) return s;
  }
  if (p.Has("seed")) {
    uint64_t seed = 0;
    if (grpc::Status s = p.Integer("seed", kExactIntegerMax, &seed); !s.ok()) return s;
    o->set_seed(seed);
  }
  if (p.Has("stop")) {
    std::string stop;
    if (grpc::Status s = p.String("stop", &stop); !s.ok()) return s;
    o->add_stop(stop);
  }
  return grpc::Status::OK;
}

// The most elements a BYTES tensor has; a shape with more is refused before any is read.
constexpr int64_t kMaxElements = int64_t{1} << 32;

// A BYTES input's elements, from bytes_contents or from its raw entry.
grpc::Status ReadBytesInput(const inference::ModelInferRequest& request, int index,
                            std::vector<std::string>* elements) {
  const auto& input = request.inputs(index);
  if (input.datatype() != "BYTES") {
    return Invalid("input " + QuoteInput(input.name()) + " has datatype " +
                   QuoteInput(input.datatype()) + "; texts are BYTES tensors");
  }
  // The element count the shape says, held at kMaxElements + 1 (so that no product of
  // dimensions overflows): a message cannot hold more elements.
  int64_t count = 1;
  for (int64_t d : input.shape()) {
    if (d < 0 || d > kMaxElements) {
      return Invalid("input " + input.name() + " has dimension " + std::to_string(d) +
                     "; dimensions are 0.." + std::to_string(kMaxElements));
    }
    count = d != 0 && count > kMaxElements / d ? kMaxElements + 1 : count * d;
  }
  if (count > kMaxElements) {
    return Invalid("input " + input.name() + " has a shape of more than " +
                   std::to_string(kMaxElements) + " elements");
  }
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != request.inputs_size()) {
      return Invalid("raw_input_contents has " + std::to_string(request.raw_input_contents_size()) +
                     " entries for " + std::to_string(request.inputs_size()) +
                     " inputs: give every input in raw form, or none");
    }
    if (input.contents().bytes_contents_size() > 0) {
      return Invalid("input " + input.name() + " has both contents and raw_input_contents");
    }
    std::string error;
    if (!DecodeBytes(request.raw_input_contents(index), static_cast<size_t>(count), elements,
                     &error)) {
      return Invalid("input " + input.name() + ": " + error);
    }
  } else {
    elements->assign(input.contents().bytes_contents().begin(),
                     input.contents().bytes_contents().end());
  }
  if (static_cast<int64_t>(elements->size()) != count) {
    return Invalid("input " + input.name() + " has " + std::to_string(elements->size()) +
                   " elements; its shape says " + std::to_string(count));
  }
  return grpc::Status::OK;
}

void AddRaw(OutputTensor* tensor, std::vector<int64_t> shape, const char* datatype, std::string raw,
            inference::ModelInferResponse* response) {
  tensor->set_datatype(datatype);
  for (int64_t d : shape) tensor->add_shape(d);
  response->add_raw_output_contents(std::move(raw));
}

template <typename T>
std::string RawNumbers(const std::vector<T>& values) {
  // Little-endian, as the protocol says; so is every machine this builds for.
  static_assert(std::numeric_limits<T>::is_specialized);
  std::string raw(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(raw.data(), values.data(), raw.size());
  return raw;
}

bool Produces(Task task, const std::string& name) {
  const std::vector<std::string> outputs = TaskOutputs(task);
  return std::find(outputs.begin(), outputs.end(), name) != outputs.end();
}

// Fills the wanted outputs (`produce(name, tensor)` fills one). An output that another task
// of the model produces is left out, since clients such as perf_analyzer ask for every output
// the metadata lists; a name no task produces is INVALID_ARGUMENT.
template <typename Produce>
grpc::Status FillOutputs(Task task, const std::vector<std::string>& wanted,
                         inference::ModelInferResponse* response, Produce produce) {
  const std::vector<std::string> all = TaskOutputs(task);
  for (const std::string& name : wanted.empty() ? all : wanted) {
    if (!Produces(task, name)) {
      if (Produces(Task::kTranslate, name) || Produces(Task::kScore, name) ||
          Produces(Task::kGenerate, name)) {
        continue;
      }
      std::string list;
      for (const auto& n : all) list += (list.empty() ? "" : ", ") + n;
      return Invalid("output " + QuoteInput(name) + " is not an output of any request; a " +
                     TaskName(task) + " request has " + list);
    }
    auto* tensor = response->add_outputs();
    tensor->set_name(name);
    produce(name, tensor);
  }
  return grpc::Status::OK;
}

}  // namespace

int64_t ParseVersion(const std::string& version) {
  if (version.empty()) return 0;
  if (version.size() > 18 || !std::all_of(version.begin(), version.end(),
                                          [](unsigned char c) { return std::isdigit(c); })) {
    return -1;
  }
  const int64_t v = std::stoll(version);
  return v > 0 ? v : -1;
}

grpc::Status PlanInfer(const inference::ModelInferRequest& request, bool is_mt, bool streaming,
                       InferPlan* plan) {
  const Parameters params(request.parameters());
  std::vector<std::string> texts, targets;
  bool has_text = false, has_target = false;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const std::string& name = request.inputs(i).name();
    const bool text = name == "TEXT";
    if (!text && !(name == "TARGET" && is_mt)) {
      return Invalid("input " + QuoteInput(name) + " is not an input of this model; it takes " +
                     (is_mt ? "TEXT (and TARGET to score)" : "TEXT"));
    }
    if (text ? has_text : has_target) return Invalid("input " + name + " is given twice");
    (text ? has_text : has_target) = true;
    if (grpc::Status s = ReadBytesInput(request, i, text ? &texts : &targets); !s.ok()) return s;
  }
  if (!has_text) return Invalid("the request has no TEXT input (a BYTES tensor of texts)");

  Task task = is_mt ? (has_target ? Task::kScore : Task::kTranslate)
                    : (streaming ? Task::kGenerate : Task::kScore);
  if (params.Has("task")) {
    std::string name;
    if (grpc::Status s = params.String("task", &name); !s.ok()) return s;
    if (name == "translate" && is_mt) {
      task = Task::kTranslate;
    } else if (name == "score") {
      task = Task::kScore;
    } else if (name == "generate" && !is_mt) {
      task = Task::kGenerate;
    } else {
      return Invalid("parameter task is " + QuoteInput(name) + "; this " +
                     (is_mt ? "translation model does translate or score"
                            : "language model does score or generate"));
    }
  }
  if (is_mt && (task == Task::kScore) != has_target) {
    return Invalid(has_target ? "TARGET is scored against TEXT: a translate request has no TARGET"
                              : "scoring a translation model needs a TARGET input beside TEXT");
  }
  plan->task = task;

  uint32_t priority = 0;
  if (params.Has("priority")) {
    uint64_t v = 0;
    if (grpc::Status s = params.Integer("priority", kUint32Max, &v); !s.ok()) return s;
    priority = static_cast<uint32_t>(v);
  }
  if (params.Has("timeout")) {
    uint64_t us = 0;
    if (grpc::Status s = params.Integer("timeout", kExactIntegerMax, &us); !s.ok()) return s;
    // Triton's clients send 0 for "none".
    if (us > 0) plan->timeout = std::chrono::microseconds(us);
  }
  // What Triton's clients send on their own, and the HTTP front end's binary-output switch.
  for (const char* name : {"binary_data_output", "triton_enable_empty_final_response",
                           "sequence_id", "sequence_start", "sequence_end"}) {
    params.Ignore(name);
  }
  const int64_t version = ParseVersion(request.model_version());
  if (version < 0) {
    return Invalid("model_version is " + QuoteInput(request.model_version()) +
                   "; it is a positive integer, or empty for the newest");
  }

  switch (task) {
    case Task::kTranslate: {
      v1::TranslateRequest& r = plan->translate;
      r.set_model(request.model_name());
      r.set_version(version);
      r.set_priority(priority);
      for (auto& t : texts) r.add_texts(std::move(t));
      if (grpc::Status s = ReadTranslateOptions(params, r.mutable_options()); !s.ok()) return s;
      break;
    }
    case Task::kScore: {
      v1::ScoreRequest& r = plan->score;
      r.set_model(request.model_name());
      r.set_version(version);
      r.set_priority(priority);
      if (is_mt) {
        if (texts.size() != targets.size()) {
          return Invalid("TEXT has " + std::to_string(texts.size()) + " elements and TARGET " +
                         std::to_string(targets.size()) + "; they are pairs");
        }
        for (size_t i = 0; i < texts.size(); ++i) {
          auto* pair = r.add_pairs();
          pair->set_source(std::move(texts[i]));
          pair->set_target(std::move(targets[i]));
        }
      } else {
        for (auto& t : texts) r.add_texts(std::move(t));
      }
      break;
    }
    case Task::kGenerate: {
      v1::GenerateRequest& r = plan->generate;
      if (texts.size() != 1) {
        return Invalid("a generate request has one prompt: TEXT has " +
                       std::to_string(texts.size()) + " elements");
      }
      r.set_model(request.model_name());
      r.set_version(version);
      r.set_priority(priority);
      r.set_prompt(std::move(texts[0]));
      if (grpc::Status s = ReadGenerateOptions(params, r.mutable_options()); !s.ok()) return s;
      break;
    }
  }
  if (grpc::Status s = params.CheckAllUsed(task); !s.ok()) return s;
  for (const auto& output : request.outputs()) plan->outputs.push_back(output.name());
  return grpc::Status::OK;
}

grpc::Status FillTranslateOutputs(const v1::TranslateResponse& result,
                                  const std::vector<std::string>& outputs,
                                  inference::ModelInferResponse* response) {
  const int64_t batch = result.translations_size();
  int64_t n_best = 0;
  for (const auto& t : result.translations())
    n_best = std::max<int64_t>(n_best, t.hypotheses_size());
  return FillOutputs(Task::kTranslate, outputs, response,
                     [&](const std::string& name, OutputTensor* tensor) {
                       // A sentence with fewer hypotheses than the others is padded with "" and
                       // score 0.
                       std::vector<std::string> texts;
                       std::vector<float> scores;
                       for (const auto& t : result.translations()) {
                         for (int64_t i = 0; i < n_best; ++i) {
                           const bool has = i < t.hypotheses_size();
                           texts.push_back(has ? t.hypotheses(static_cast<int>(i)).text() : "");
                           scores.push_back(has ? t.hypotheses(static_cast<int>(i)).score() : 0.0f);
                         }
                       }
                       if (name == "TRANSLATION") {
                         AddRaw(tensor, {batch, n_best}, "BYTES", EncodeBytes(texts), response);
                       } else {
                         AddRaw(tensor, {batch, n_best}, "FP32", RawNumbers(scores), response);
                       }
                     });
}

grpc::Status FillScoreOutputs(const v1::ScoreResponse& result,
                              const std::vector<std::string>& outputs,
                              inference::ModelInferResponse* response) {
  const int64_t batch = result.results_size();
  int64_t longest = 0;
  for (const auto& r : result.results()) longest = std::max<int64_t>(longest, r.tokens_size());
  return FillOutputs(
      Task::kScore, outputs, response, [&](const std::string& name, OutputTensor* tensor) {
        if (name == "LOGPROB" || name == "PERPLEXITY") {
          std::vector<double> values;
          for (const auto& r : result.results()) {
            values.push_back(name == "LOGPROB" ? r.total_logprob() : r.perplexity());
          }
          AddRaw(tensor, {batch}, "FP64", RawNumbers(values), response);
        } else if (name == "TOKEN_COUNT") {
          std::vector<int64_t> counts;
          for (const auto& r : result.results()) counts.push_back(r.tokens_size());
          AddRaw(tensor, {batch}, "INT64", RawNumbers(counts), response);
        } else {
          // Per token, padded to the longest text with 0 and "" (TOKEN_COUNT says where).
          std::vector<float> logprobs;
          std::vector<std::string> tokens;
          for (const auto& r : result.results()) {
            for (int64_t i = 0; i < longest; ++i) {
              const bool has = i < r.tokens_size();
              logprobs.push_back(has ? r.tokens(static_cast<int>(i)).logprob() : 0.0f);
              tokens.push_back(has ? r.tokens(static_cast<int>(i)).token() : "");
            }
          }
          if (name == "LOGPROBS") {
            AddRaw(tensor, {batch, longest}, "FP32", RawNumbers(logprobs), response);
          } else {
            AddRaw(tensor, {batch, longest}, "BYTES", EncodeBytes(tokens), response);
          }
        }
      });
}

grpc::Status FillGenerateOutputs(const std::string& text, const v1::GenerateResponse* last,
                                 const std::vector<std::string>& outputs,
                                 inference::ModelInferResponse* response) {
  // A streamed piece carries GENERATED only, whatever was asked for.
  std::vector<std::string> wanted = outputs;
  if (last == nullptr) wanted = {"GENERATED"};
  return FillOutputs(
      Task::kGenerate, wanted, response, [&](const std::string& name, OutputTensor* tensor) {
        if (name == "GENERATED") {
          AddRaw(tensor, {1}, "BYTES", EncodeBytes({text}), response);
        } else if (name == "FINISH_REASON") {
          AddRaw(tensor, {1}, "BYTES", EncodeBytes({last->finish_reason()}), response);
        } else {
          AddRaw(tensor, {1}, "INT64", RawNumbers(std::vector<int64_t>{last->tokens()}), response);
        }
      });
}

namespace {

struct TensorSpec {
  const char* name;
  const char* datatype;
  inference::DataType type;
  std::vector<int64_t> shape;
  bool optional;
};

std::vector<TensorSpec> Inputs(bool is_mt) {
  std::vector<TensorSpec> inputs = {{"TEXT", "BYTES", inference::TYPE_STRING, {-1}, false}};
  if (is_mt) inputs.push_back({"TARGET", "BYTES", inference::TYPE_STRING, {-1}, true});
  return inputs;
}

std::vector<TensorSpec> Outputs(bool is_mt) {
  std::vector<TensorSpec> outputs;
  if (is_mt) {
    outputs.push_back({"TRANSLATION", "BYTES", inference::TYPE_STRING, {-1, -1}, false});
    outputs.push_back({"SCORE", "FP32", inference::TYPE_FP32, {-1, -1}, false});
  }
  outputs.push_back({"LOGPROB", "FP64", inference::TYPE_FP64, {-1}, false});
  outputs.push_back({"PERPLEXITY", "FP64", inference::TYPE_FP64, {-1}, false});
  outputs.push_back({"TOKEN_COUNT", "INT64", inference::TYPE_INT64, {-1}, false});
  outputs.push_back({"LOGPROBS", "FP32", inference::TYPE_FP32, {-1, -1}, false});
  outputs.push_back({"TOKENS", "BYTES", inference::TYPE_STRING, {-1, -1}, false});
  if (!is_mt) {
    outputs.push_back({"GENERATED", "BYTES", inference::TYPE_STRING, {1}, false});
    outputs.push_back({"FINISH_REASON", "BYTES", inference::TYPE_STRING, {1}, false});
  }
  return outputs;
}

}  // namespace

void DescribeModel(const v1::ModelInfo& info, inference::ModelMetadataResponse* metadata) {
  const bool is_mt = info.architecture() == "transformer_mt";
  metadata->set_platform("normserve_" + info.architecture());
  for (int64_t v : info.versions()) metadata->add_versions(std::to_string(v));
  for (const auto& spec : Inputs(is_mt)) {
    auto* t = metadata->add_inputs();
    t->set_name(spec.name);
    t->set_datatype(spec.datatype);
    for (int64_t d : spec.shape) t->add_shape(d);
  }
  for (const auto& spec : Outputs(is_mt)) {
    auto* t = metadata->add_outputs();
    t->set_name(spec.name);
    t->set_datatype(spec.datatype);
    for (int64_t d : spec.shape) t->add_shape(d);
  }
}

void DescribeModel(const v1::ModelInfo& info, inference::ModelConfig* config) {
  const bool is_mt = info.architecture() == "transformer_mt";
  config->set_platform("normserve_" + info.architecture());
  config->set_backend("normserve");
  config->set_max_batch_size(0);  // TEXT's one dimension is the batch: shapes are whole
  for (const auto& spec : Inputs(is_mt)) {
    auto* t = config->add_input();
    t->set_name(spec.name);
    t->set_data_type(spec.type);
    for (int64_t d : spec.shape) t->add_dims(d);
    t->set_optional(spec.optional);
  }
  for (const auto& spec : Outputs(is_mt)) {
    auto* t = config->add_output();
    t->set_name(spec.name);
    t->set_data_type(spec.type);
    for (int64_t d : spec.shape) t->add_dims(d);
  }
}

std::string EncodeBytes(const std::vector<std::string>& elements) {
  std::string raw;
  for (const auto& e : elements) {
    const auto n = static_cast<uint32_t>(e.size());
    const char length[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                            static_cast<char>((n >> 16) & 0xff),
                            static_cast<char>((n >> 24) & 0xff)};
    raw.append(length, 4);
    raw.append(e);
  }
  return raw;
}

bool DecodeBytes(const std::string& raw, size_t max_elements, std::vector<std::string>* elements,
                 std::string* error) {
  size_t at = 0;
  while (at < raw.size()) {
    if (elements->size() == max_elements) {
      *error = "the raw BYTES form has more than the " + std::to_string(max_elements) +
               " elements its shape says (byte " + std::to_string(at) + ")";
      return false;
    }
    if (raw.size() - at < 4) {
      *error = "the raw BYTES form ends inside an element's 4-byte length (byte " +
               std::to_string(at) + ")";
      return false;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + at);
    const uint64_t n = p[0] | (p[1] << 8) | (p[2] << 16) | (uint64_t{p[3]} << 24);
    at += 4;
    if (n > raw.size() - at) {
      *error = "an element of the raw BYTES form says " + std::to_string(n) + " bytes and " +
               std::to_string(raw.size() - at) + " remain (byte " + std::to_string(at - 4) + ")";
      return false;
    }
    elements->push_back(raw.substr(at, n));
    at += n;
  }
  return true;
}

}  // namespace normserve::kserve
