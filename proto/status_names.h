#pragma once

#include <string>

#include "normserve/v1/normserve.pb.h"

namespace normserve {

// "OK", "INVALID_ARGUMENT", ... for a grpc::StatusCode; "UNKNOWN" outside 0..16. The
// metrics' code label, the CLI's error prefix and the load generator's code map.
const char* StatusCodeName(int code);

// READY, LOADING, FAILED, UNLOADED: a ModelState's name without its MODEL_STATE_ prefix, for
// the CLI's model list and the load generator's errors.
std::string ModelStateName(v1::ModelState state);

}  // namespace normserve
