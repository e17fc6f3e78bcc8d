// The TLS flags of the channel to normserved (client/channel.h), the same in normserve and
// normserve-bench.
#pragma once

#include "client/channel.h"

namespace CLI {
class App;
}  // namespace CLI

namespace normserve::client {

// Adds --tls-ca, --tls-cert, --tls-key and --tls-server-name, which fill *tls, to APP in the
// group "TLS"; CheckChannelTls checks them together after parsing.
void AddChannelTlsOptions(CLI::App* app, ChannelTls* tls);

}  // namespace normserve::client
