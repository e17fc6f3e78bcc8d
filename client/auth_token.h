// The bearer token of normserve and normserve-bench: read from a file (never from argv, where
// every user of the machine can see it) and sent as `authorization: Bearer <token>` on
// every call (server/auth.h checks it).
#pragma once

#include <grpcpp/client_context.h>

#include <string>

namespace normserve::client {

// The file's content without surrounding whitespace; throws std::invalid_argument naming the
// file (never the token) when it cannot be read or holds no single token.
std::string ReadTokenFile(const std::string& path);

// Adds the token to the call's metadata; does nothing when `token` is empty (no --token-file).
void AttachToken(grpc::ClientContext* context, const std::string& token);

}  // namespace normserve::client
