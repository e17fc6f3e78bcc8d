// The Open Inference Protocol's converters (server/kserve_tensors.cc): the raw BYTES form,
// and how a ModelInferRequest becomes a normserve.v1 request or is refused.
#include "server/kserve_tensors.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace normserve::kserve {
namespace {

using Strings = std::vector<std::string>;

// A 4-byte little-endian length.
std::string Length(uint32_t n) {
  return std::string{static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                     static_cast<char>((n >> 16) & 0xff), static_cast<char>(n >> 24)};
}

inference::ModelInferRequest::InferInputTensor* AddInput(inference::ModelInferRequest* request,
                                                         const std::string& name,
                                                         std::vector<int64_t> shape,
                                                         const std::string& datatype = "BYTES") {
  auto* input = request->add_inputs();
  input->set_name(name);
  input->set_datatype(datatype);
  for (int64_t d : shape) input->add_shape(d);
  return input;
}

// A request for "deen" with TEXT given in the raw form.
inference::ModelInferRequest RawText(const std::string& raw, std::vector<int64_t> shape) {
  inference::ModelInferRequest request;
  request.set_model_name("deen");
  AddInput(&request, "TEXT", std::move(shape));
  request.add_raw_input_contents(raw);
  return request;
}

// A request for "deen" with TEXT given in bytes_contents.
inference::ModelInferRequest Texts(const Strings& texts) {
  inference::ModelInferRequest request;
  request.set_model_name("deen");
  auto* input = AddInput(&request, "TEXT", {static_cast<int64_t>(texts.size())});
  for (const auto& t : texts) input->mutable_contents()->add_bytes_contents(t);
  return request;
}

// The message of PlanInfer's refusal, which must be INVALID_ARGUMENT.
std::string Refusal(const inference::ModelInferRequest& request, bool is_mt = true,
                    bool streaming = false) {
  InferPlan plan;
  const grpc::Status s = PlanInfer(request, is_mt, streaming, &plan);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  return s.error_message();
}

InferPlan Planned(const inference::ModelInferRequest& request, bool is_mt = true,
                  bool streaming = false) {
  InferPlan plan;
  const grpc::Status s = PlanInfer(request, is_mt, streaming, &plan);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return plan;
}

void SetString(inference::ModelInferRequest* request, const std::string& name,
               const std::string& value) {
  (*request->mutable_parameters())[name].set_string_param(value);
}

TEST(KServeBytesTest, EncodesAndDecodesElementsWithTheirLengths) {
  const Strings texts = {"Guten Morgen", "", "ein großes Haus"};
  const std::string raw = EncodeBytes(texts);
  EXPECT_EQ(raw, Length(12) + "Guten Morgen" + Length(0) + Length(16) + "ein großes Haus");
  Strings decoded;
  std::string error;
  ASSERT_TRUE(DecodeBytes(raw, 3, &decoded, &error)) << error;
  EXPECT_EQ(decoded, texts);
  decoded.clear();
  EXPECT_TRUE(DecodeBytes("", 0, &decoded, &error));
  EXPECT_TRUE(decoded.empty());
}

TEST(KServeBytesTest, RefusesTruncatedAndOverlongLengths) {
  Strings decoded;
  std::string error;
  EXPECT_FALSE(DecodeBytes(Length(1) + "a" + "\x02\x00", 10, &decoded, &error));
  EXPECT_EQ(error, "the raw BYTES form ends inside an element's 4-byte length (byte 5)");
  // A length of 4 GiB - 1 is compared with what remains; nothing that size is allocated.
  decoded.clear();
  EXPECT_FALSE(DecodeBytes(Length(0xffffffffu) + "abc", 10, &decoded, &error));
  EXPECT_EQ(error, "an element of the raw BYTES form says 4294967295 bytes and 3 remain (byte 0)");
  decoded.clear();
  EXPECT_FALSE(DecodeBytes(Length(1) + "a" + Length(2) + "b", 10, &decoded, &error));
  EXPECT_EQ(error, "an element of the raw BYTES form says 2 bytes and 1 remain (byte 5)");
}

TEST(KServeBytesTest, StopsAtTheElementsTheShapeSays) {
  // 4 bytes per empty element: a message full of them would cost ~10x its size in strings.
  Strings decoded;
  std::string error;
  EXPECT_FALSE(DecodeBytes(std::string(4 * 1000, '\0'), 2, &decoded, &error));
  EXPECT_EQ(decoded.size(), 2u);
  EXPECT_EQ(error, "the raw BYTES form has more than the 2 elements its shape says (byte 8)");
  EXPECT_EQ(Refusal(RawText(std::string(4 * 1000, '\0'), {1})),
            "input TEXT: the raw BYTES form has more than the 1 elements its shape says (byte 4)");
}

TEST(KServePlanTest, BothBytesFormsGiveTheSameTexts) {
  const Strings texts = {"Guten Morgen", "", "Grüße"};
  const InferPlan raw = Planned(RawText(EncodeBytes(texts), {3}));
  const InferPlan contents = Planned(Texts(texts));
  EXPECT_EQ(raw.task, Task::kTranslate);
  EXPECT_EQ(Strings(raw.translate.texts().begin(), raw.translate.texts().end()), texts);
  EXPECT_EQ(raw.translate.SerializeAsString(), contents.translate.SerializeAsString());
  EXPECT_EQ(raw.translate.model(), "deen");
  // A [1, 3] shape holds the same three.
  EXPECT_EQ(Planned(RawText(EncodeBytes(texts), {1, 3})).translate.texts_size(), 3);
}

TEST(KServePlanTest, RefusesRawFormsThatDoNotMatchTheShape) {
  EXPECT_EQ(Refusal(RawText(Length(5) + "Hallo" + "\x01", {1})),
            "input TEXT: the raw BYTES form has more than the 1 elements its shape says (byte 9)");
  EXPECT_EQ(Refusal(RawText(Length(5) + "Hallo" + "\x01", {2})),
            "input TEXT: the raw BYTES form ends inside an element's 4-byte length (byte 9)");
  EXPECT_EQ(Refusal(RawText(Length(99) + "Hallo", {1})),
            "input TEXT: an element of the raw BYTES form says 99 bytes and 5 remain (byte 0)");
  EXPECT_EQ(Refusal(RawText(EncodeBytes({"a"}), {2})),
            "input TEXT has 1 elements; its shape says 2");
}

TEST(KServePlanTest, RefusesShapesThatAreNotCountsOfElements) {
  EXPECT_EQ(Refusal(RawText(EncodeBytes({"a"}), {-1})),
            "input TEXT has dimension -1; dimensions are 0..4294967296");
  // Their product would overflow int64 (it was computed unchecked).
  EXPECT_EQ(Refusal(RawText(EncodeBytes({"a"}), {int64_t{1} << 32, int64_t{1} << 32})),
            "input TEXT has a shape of more than 4294967296 elements");
  EXPECT_EQ(Refusal(RawText(EncodeBytes({"a"}), {3, int64_t{1} << 31})),
            "input TEXT has a shape of more than 4294967296 elements");
  inference::ModelInferRequest request = Texts({"a", "b"});
  request.mutable_inputs(0)->set_shape(0, 3);
  EXPECT_EQ(Refusal(request), "input TEXT has 2 elements; its shape says 3");
  // Zero elements is a shape, and an empty batch.
  EXPECT_EQ(Planned(RawText("", {0})).translate.texts_size(), 0);
}

TEST(KServePlanTest, RefusesWhatIsNotABytesTextInput) {
  inference::ModelInferRequest request = Texts({"a"});
  request.mutable_inputs(0)->set_datatype("INT32");
  EXPECT_EQ(Refusal(request), "input 'TEXT' has datatype 'INT32'; texts are BYTES tensors");

  inference::ModelInferRequest target_only;
  AddInput(&target_only, "TARGET", {1})->mutable_contents()->add_bytes_contents("a");
  EXPECT_EQ(Refusal(target_only), "the request has no TEXT input (a BYTES tensor of texts)");
  EXPECT_EQ(Refusal(inference::ModelInferRequest()),
            "the request has no TEXT input (a BYTES tensor of texts)");
  EXPECT_EQ(Refusal(target_only, /*is_mt=*/false),
            "input 'TARGET' is not an input of this model; it takes TEXT");

  inference::ModelInferRequest twice = Texts({"a"});
  *twice.add_inputs() = twice.inputs(0);
  EXPECT_EQ(Refusal(twice), "input TEXT is given twice");

  // Raw form for some inputs only, or both forms for one.
  inference::ModelInferRequest mixed = RawText(EncodeBytes({"a"}), {1});
  AddInput(&mixed, "TARGET", {1})->mutable_contents()->add_bytes_contents("b");
  EXPECT_EQ(Refusal(mixed),
            "raw_input_contents has 1 entries for 2 inputs: give every input in raw form, or none");
  inference::ModelInferRequest both = Texts({"a"});
  both.add_raw_input_contents(EncodeBytes({"a"}));
  EXPECT_EQ(Refusal(both), "input TEXT has both contents and raw_input_contents");
}

TEST(KServePlanTest, ScoresPairsWhenTargetIsGiven) {
  inference::ModelInferRequest request = Texts({"a", "b"});
  auto* target = AddInput(&request, "TARGET", {2});
  target->mutable_contents()->add_bytes_contents("x");
  target->mutable_contents()->add_bytes_contents("y");
  const InferPlan plan = Planned(request);
  ASSERT_EQ(plan.task, Task::kScore);
  ASSERT_EQ(plan.score.pairs_size(), 2);
  EXPECT_EQ(plan.score.pairs(1).source(), "b");
  EXPECT_EQ(plan.score.pairs(1).target(), "y");
  target->set_shape(0, 1);
  target->mutable_contents()->mutable_bytes_contents()->RemoveLast();
  EXPECT_EQ(Refusal(request), "TEXT has 2 elements and TARGET 1; they are pairs");
  SetString(&request, "task", "translate");
  EXPECT_EQ(Refusal(request), "TARGET is scored against TEXT: a translate request has no TARGET");
}

TEST(KServePlanTest, ReadsNumericParametersGivenAsStrings) {
  // tritonclient sends no floating-point parameters: strings that are numbers stand in.
  inference::ModelInferRequest request = Texts({"a"});
  SetString(&request, "beam_size", "4");
  SetString(&request, "length_penalty", "0.5");
  (*request.mutable_parameters())["max_length_b"].set_int64_param(20);
  (*request.mutable_parameters())["n_best"].set_double_param(2);
  SetString(&request, "timeout", "1500");
  const InferPlan plan = Planned(request);
  EXPECT_EQ(plan.translate.options().beam_size(), 4u);
  EXPECT_FLOAT_EQ(plan.translate.options().length_penalty(), 0.5f);
  EXPECT_EQ(plan.translate.options().max_length_b(), 20u);
  EXPECT_EQ(plan.translate.options().n_best(), 2u);
  ASSERT_TRUE(plan.timeout.has_value());
  EXPECT_EQ(plan.timeout->count(), 1500);

  inference::ModelInferRequest generate;
  generate.set_model_name("enlm");
  AddInput(&generate, "TEXT", {1})->mutable_contents()->add_bytes_contents("Once");
  SetString(&generate, "temperature", "0.7");
  SetString(&generate, "seed", "42");
  SetString(&generate, "stop", ".");
  const InferPlan generated = Planned(generate, /*is_mt=*/false, /*streaming=*/true);
  ASSERT_EQ(generated.task, Task::kGenerate);
  EXPECT_FLOAT_EQ(generated.generate.options().temperature(), 0.7f);
  EXPECT_EQ(generated.generate.options().seed(), 42u);
  EXPECT_EQ(generated.generate.options().stop(0), ".");
}

TEST(KServePlanTest, RefusesParametersThatAreNotWhatTheyMustBe) {
  const auto refusal = [](const std::string& name, const inference::InferParameter& value) {
    inference::ModelInferRequest request = Texts({"a"});
    (*request.mutable_parameters())[name] = value;
    return Refusal(request);
  };
  inference::InferParameter p;
  for (const char* not_a_number : {"4x", "", "nan", "inf", "0x"}) {
    p.set_string_param(not_a_number);
    EXPECT_EQ(refusal("beam_size", p),
              "parameter beam_size must be a number (or a string that is one)")
        << not_a_number;
  }
  p.set_bool_param(true);
  EXPECT_EQ(refusal("length_penalty", p),
            "parameter length_penalty must be a number (or a string that is one)");
  p.set_string_param("2.5");
  EXPECT_EQ(refusal("beam_size", p), "parameter beam_size must be an integer in 0..4294967295");
  p.set_int64_param(-1);
  EXPECT_EQ(refusal("priority", p), "parameter priority must be an integer in 0..4294967295");
  p.set_uint64_param(uint64_t{1} << 54);
  EXPECT_EQ(refusal("timeout", p), "parameter timeout must be an integer in 0..9007199254740992");
  p.set_int64_param(1);
  EXPECT_EQ(refusal("task", p), "parameter task must be a string");
  p.set_string_param("generate");
  EXPECT_EQ(refusal("task", p),
            "parameter task is 'generate'; this translation model does translate or score");
  p.set_int64_param(4);
  EXPECT_EQ(refusal("beam", p),
            "parameter 'beam' means nothing to a translate request; README \"Open Inference "
            "Protocol\" lists the parameters");
  // A generate option on a translate request means nothing either.
  EXPECT_EQ(refusal("top_k", p).substr(0, 44), "parameter 'top_k' means nothing to a transla");
  // What Triton's clients send on their own is accepted.
  inference::ModelInferRequest request = Texts({"a"});
  (*request.mutable_parameters())["sequence_id"].set_int64_param(0);
  (*request.mutable_parameters())["binary_data_output"].set_bool_param(true);
  Planned(request);
}

TEST(KServePlanTest, RefusesVersionsThatAreNotPositiveIntegers) {
  EXPECT_EQ(ParseVersion(""), 0);
  EXPECT_EQ(ParseVersion("12"), 12);
  for (const char* bad : {"0", "-1", "1x", " 1",
                          "\xff"
                          "1",
                          "1234567890123456789"}) {
    EXPECT_EQ(ParseVersion(bad), -1) << bad;
  }
  inference::ModelInferRequest request = Texts({"a"});
  request.set_model_version("v2");
  EXPECT_EQ(Refusal(request),
            "model_version is 'v2'; it is a positive integer, or empty for the newest");
}

TEST(KServeOutputsTest, RefusesOutputsNoRequestHas) {
  v1::TranslateResponse result;
  result.add_translations()->add_hypotheses()->set_text("Good morning");
  inference::ModelInferResponse response;
  ASSERT_TRUE(FillTranslateOutputs(result, {}, &response).ok());
  ASSERT_EQ(response.outputs_size(), 2);
  EXPECT_EQ(response.raw_output_contents(0), EncodeBytes({"Good morning"}));
  inference::ModelInferResponse other;
  const grpc::Status s = FillTranslateOutputs(result, {"X"}, &other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "output 'X' is not an output of any request; a translate request has TRANSLATION, "
            "SCORE");
}

}  // namespace
}  // namespace normserve::kserve
