#pragma once

namespace normserve {

// "OK", "INVALID_ARGUMENT", ... for a grpc::StatusCode; "UNKNOWN" outside 0..16. The
// metrics' code label, the CLI's error prefix and the load generator's code map.
const char* StatusCodeName(int code);

}  // namespace normserve
