// The two kinds of failure the models library reports to its callers; the server maps them
// to gRPC status codes (FAILED_PRECONDITION at load, INVALID_ARGUMENT per request).
#pragma once

#include <stdexcept>
#include <string>

namespace normserve {

// A model directory, weight file, config or tokenizer that cannot be served, and why.
class ModelLoadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A request the model cannot serve as given; the message states the limit that was broken.
class InvalidInputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace normserve
