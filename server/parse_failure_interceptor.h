// Turns gRPC's answer to a request message that does not parse into one that says so.
//
// gRPC C++ answers a request whose bytes fail to parse (e.g. invalid UTF-8 in a `string`
// field such as `model` or `stop`, which protobuf rejects) with UNIMPLEMENTED and an empty
// message, before any handler runs (server_callback_handlers.h). Every method of
// normserve.v1.NormServe and of inference.GRPCInferenceService (the Open Inference Protocol)
// is implemented, so that status on one of them can only mean a request that did not parse:
// this interceptor rewrites it to INVALID_ARGUMENT with a message that says what to fix.
#pragma once

#include <grpcpp/support/server_interceptor.h>

namespace normserve {

class ParseFailureInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace normserve
