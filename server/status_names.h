#pragma once

#include <grpcpp/support/status.h>

namespace normserve {

// "OK", "INVALID_ARGUMENT", ...: the metrics' code label and the CLI's error prefix.
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace normserve
