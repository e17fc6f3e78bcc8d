#include "server/parse_failure_interceptor.h"

#include <cstring>
#include <string>

namespace normserve {
namespace {

// The services whose every method is implemented, and the string fields (which protobuf
// rejects when they hold invalid UTF-8) their clients fill.
struct Service {
  const char* prefix;
  const char* string_fields;
};
constexpr Service kServices[] = {
    {"/normserve.v1.NormServe/", "model, stop"},
    {"/inference.GRPCInferenceService/", "model_name, model_version, id, a parameter"},
};

class ParseFailureInterceptor : public grpc::experimental::Interceptor {
 public:
  ParseFailureInterceptor(std::string method, const Service& service)
      : message_("the request is not a valid " + method.substr(std::strlen(service.prefix)) +
                 " message: a string field (" + service.string_fields +
                 ") holds invalid UTF-8, or the bytes are not the message's protobuf encoding") {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message_));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string message_;
};

}  // namespace

grpc::experimental::Interceptor* ParseFailureInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* method = info->method();
  if (method == nullptr) return nullptr;
  for (const Service& service : kServices) {
    if (std::strncmp(method, service.prefix, std::strlen(service.prefix)) == 0) {
      return new ParseFailureInterceptor(method, service);
    }
  }
  return nullptr;  // other services, and methods no service has, keep gRPC's answer
}

}  // namespace normserve
