// The HTTP binding's inference request (server/kserve_json.cc): JSON tensors, parameters and
// the binary tensor data extension, into a ModelInferRequest or refused.
#include "server/kserve_json.h"

#include <gtest/gtest.h>

#include <string>

#include "server/kserve_tensors.h"

namespace normserve::kserve {
namespace {

struct Read {
  grpc::Status status;
  inference::ModelInferRequest request;
  BinaryOutputs binary;
};

Read ReadBody(const std::string& body, std::optional<std::string> header = std::nullopt) {
  Read r;
  r.status = ReadJsonInferRequest(body, header, &r.request, &r.binary);
  return r;
}

// The message of a refusal, which must be INVALID_ARGUMENT.
std::string Refusal(const std::string& body, std::optional<std::string> header = std::nullopt) {
  const Read r = ReadBody(body, std::move(header));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  return r.status.error_message();
}

std::string TextInput(const std::string& rest) {
  return R"({"inputs":[{"name":"TEXT","datatype":"BYTES",)" + rest + "}]}";
}

TEST(KServeJsonTest, PutsDataInTheRawFormFlattened) {
  const Read r = ReadBody(R"({"id":"7","inputs":[{"name":"TEXT","datatype":"BYTES","shape":[2,2],)"
                          R"("data":[["a","b"],["ß",""]]}],"outputs":[{"name":"TRANSLATION"}]})");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.request.id(), "7");
  ASSERT_EQ(r.request.raw_input_contents_size(), 1);
  EXPECT_EQ(r.request.raw_input_contents(0), EncodeBytes({"a", "b", "ß", ""}));
  EXPECT_EQ(r.request.inputs(0).shape(1), 2);
  ASSERT_EQ(r.request.outputs_size(), 1);
  EXPECT_EQ(r.binary.by_name.at("TRANSLATION"), false);
}

TEST(KServeJsonTest, ReadsTheBinaryPartAtItsOffsets) {
  const std::string json =
      R"({"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],)"
      R"("parameters":{"binary_data_size":9}},{"name":"TARGET","datatype":"BYTES","shape":[1],)"
      R"("parameters":{"binary_data_size":5}}],"parameters":{"binary_data_output":true}})";
  const std::string text = EncodeBytes({"Hallo"}), target = EncodeBytes({"H"});
  const Read r = ReadBody(json + text + target, std::to_string(json.size()));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.request.raw_input_contents(0), text);
  EXPECT_EQ(r.request.raw_input_contents(1), target);
  EXPECT_TRUE(r.binary.by_default);
  // Within the JSON part's own length, the same bytes as JSON alone.
  EXPECT_TRUE(ReadBody(TextInput(R"("shape":[1],"data":["a"])"), "72").status.ok());
}

TEST(KServeJsonTest, RefusesHeaderLengthsThatAreNotWithinTheBody) {
  const std::string body = TextInput(R"("shape":[1],"data":["a"])");
  const std::string tail = "; it must be the length of the JSON part, at most the body's 72 bytes";
  EXPECT_EQ(Refusal(body, "73"), "Inference-Header-Content-Length is '73'" + tail);
  EXPECT_EQ(Refusal(body, "18446744073709551616"),
            "Inference-Header-Content-Length is '18446744073709551616'" + tail);
  // std::stoull took these: a sign, spaces, a suffix.
  for (const char* value : {"-1", "+72", " 72", "72 ", "72x", ""}) {
    EXPECT_EQ(Refusal(body, value),
              "Inference-Header-Content-Length is '" + std::string(value) + "'" + tail);
  }
  EXPECT_EQ(Refusal(body, "10"), "the request body is not a JSON object (or not UTF-8)");
}

TEST(KServeJsonTest, RefusesBinaryDataSizesBeyondTheBinaryPart) {
  const std::string json = TextInput(R"("shape":[1],"parameters":{"binary_data_size":6})");
  const std::string length = std::to_string(json.size());
  EXPECT_EQ(Refusal(json + "12345", length),
            "input 'TEXT': binary_data_size must be a length within the 5 bytes of the binary "
            "part left");
  EXPECT_EQ(Refusal(TextInput(R"("shape":[1],"parameters":{"binary_data_size":-1})"), "0"),
            "the request body is not a JSON object (or not UTF-8)");  // header 0: no JSON
  const std::string negative = TextInput(R"("shape":[1],"parameters":{"binary_data_size":-1})");
  EXPECT_EQ(Refusal(negative + "abcd", std::to_string(negative.size())),
            "input 'TEXT': binary_data_size must be a length within the 4 bytes of the binary "
            "part left");
  const std::string huge =
      TextInput(R"("shape":[1],"parameters":{"binary_data_size":18446744073709551615})");
  EXPECT_EQ(Refusal(huge, std::to_string(huge.size())),
            "input 'TEXT': binary_data_size must be a length within the 0 bytes of the binary "
            "part left");
}

TEST(KServeJsonTest, RefusesMalformedTensors) {
  EXPECT_EQ(Refusal("[1]"), "the request body is not a JSON object (or not UTF-8)");
  EXPECT_EQ(Refusal("{\"inputs\":[{\"name\":\"\xff\"}]}"),
            "the request body is not a JSON object (or not UTF-8)");
  EXPECT_EQ(Refusal("{}"), "the request has no \"inputs\" array");
  EXPECT_EQ(Refusal(R"({"id":7,"inputs":[]})"), "\"id\" must be a string");
  EXPECT_EQ(Refusal(R"({"inputs":[{"name":"TEXT","shape":[1]}]})"),
            "each input is an object with \"name\", \"datatype\" and \"shape\"");
  EXPECT_EQ(Refusal(TextInput(R"("shape":[1.5],"data":["a"])")),
            "input 'TEXT': a shape is an array of integers");
  // Above int64's range: it read as -1 before.
  EXPECT_EQ(Refusal(TextInput(R"("shape":[18446744073709551615],"data":["a"])")),
            "input 'TEXT': a shape is an array of integers");
  EXPECT_EQ(Refusal(TextInput(R"("shape":[1])")), "input 'TEXT' has no \"data\"");
  EXPECT_EQ(Refusal(TextInput(R"("shape":[1],"data":[1])")),
            "the data of a BYTES tensor are strings");
  const std::string deep = std::string(17, '[') + "\"a\"" + std::string(17, ']');
  EXPECT_EQ(Refusal(TextInput(R"("shape":[1],"data":)" + deep)),
            "\"data\" is nested more than 16 arrays deep");
  EXPECT_TRUE(
      ReadBody(TextInput(R"("shape":[1],"data":)" + deep.substr(1, deep.size() - 2))).status.ok());
  EXPECT_EQ(Refusal(R"({"inputs":[],"outputs":{}})"), "\"outputs\" must be an array");
  EXPECT_EQ(Refusal(R"({"inputs":[],"outputs":[{}]})"), "each output is an object with a \"name\"");
}

TEST(KServeJsonTest, KeepsEachParametersJsonType) {
  const Read r = ReadBody(R"({"inputs":[],"parameters":{"a":"4","b":4,"c":-4,"d":0.5,"e":true,)"
                          R"("f":18446744073709551615}})");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const auto& p = r.request.parameters();
  EXPECT_EQ(p.at("a").string_param(), "4");
  EXPECT_EQ(p.at("b").int64_param(), 4);
  EXPECT_EQ(p.at("c").int64_param(), -4);
  EXPECT_EQ(p.at("d").double_param(), 0.5);
  EXPECT_TRUE(p.at("e").bool_param());
  EXPECT_EQ(p.at("f").uint64_param(), 18446744073709551615u);
  EXPECT_EQ(Refusal(R"({"inputs":[],"parameters":[]})"), "\"parameters\" must be an object");
  EXPECT_EQ(Refusal(R"({"inputs":[],"parameters":{"x\n":{}}})"),
            "parameter 'x\\x0a' must be a boolean, a number or a string");
}

TEST(KServeJsonTest, AsksForBinaryOutputsByNameOrByDefault) {
  const Read r =
      ReadBody(R"({"inputs":[],"parameters":{"binary_data_output":true},"outputs":[{"name":"A"},)"
               R"({"name":"B","parameters":{"binary_data":false}}]})");
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.binary.by_default);
  EXPECT_TRUE(r.binary.by_name.at("A"));
  EXPECT_FALSE(r.binary.by_name.at("B"));
}

}  // namespace
}  // namespace normserve::kserve
