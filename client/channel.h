// The channel of the normserve CLI and normserve-bench to normserved: plaintext, TLS or
// mutual TLS, from the same flags in both programs.
#pragma once

#include <memory>
#include <string>

namespace grpc {
class Channel;
class ChannelArguments;
}  // namespace grpc

namespace normserve::client {

struct ChannelTls {
  std::string ca_file;      // --tls-ca: PEM CA bundle to verify the server with; set: TLS
  std::string cert_file;    // --tls-cert: PEM client certificate chain, for mutual TLS
  std::string key_file;     // --tls-key: its PEM private key
  std::string server_name;  // --tls-server-name: the name the server's certificate must carry
                            // when it is not the host of the address
};

// Throws std::invalid_argument when the flags do not fit together.
void CheckChannelTls(const ChannelTls& tls);

// A channel to target with args; plaintext without --tls-ca. Throws std::runtime_error naming
// the flag when a file cannot be read or holds no PEM data.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ChannelTls& tls,
                                           grpc::ChannelArguments args);

}  // namespace normserve::client
