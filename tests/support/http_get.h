// A minimal HTTP/1.0 GET over a loopback socket, for scraping /metrics in tests.
#pragma once

#include <string>

namespace normserve::testing {

// Returns the response body; throws std::runtime_error when the request fails.
std::string HttpGet(int port, const std::string& path);

}  // namespace normserve::testing
