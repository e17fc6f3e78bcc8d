#include "server/parse_failure_interceptor.h"

#include <cstring>
#include <string>

namespace normserve {
namespace {

constexpr char kServicePrefix[] = "/normserve.v1.NormServe/";

class ParseFailureInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ParseFailureInterceptor(std::string method) : method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            "the request is not a valid " + method_.substr(std::strlen(kServicePrefix)) +
                " message: a string field (model, stop) holds invalid UTF-8, or the bytes are "
                "not the message's protobuf encoding"));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
};

}  // namespace

grpc::experimental::Interceptor* ParseFailureInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  if (method == nullptr || std::strncmp(method, kServicePrefix, std::strlen(kServicePrefix)) != 0) {
    return nullptr;  // other services, and methods no service has, keep gRPC's answer
  }
  return new ParseFailureInterceptor(method);
}

}  // namespace normserve
