// TLS and mutual TLS on the gRPC port: the credentials the listening port is made with.
#pragma once

#include <memory>
#include <string>

namespace grpc {
class ServerCredentials;
}  // namespace grpc

namespace normserve {

struct TlsOptions {
  std::string cert_file;       // PEM certificate chain; empty: plaintext
  std::string key_file;        // PEM private key of the certificate
  std::string client_ca_file;  // PEM CA bundle; set: client certificates required and verified
  int refresh_secs = 60;       // how often the files are re-read (rotation without a restart)
};

// Insecure credentials without a certificate; otherwise TLS credentials that re-read the files
// every refresh_secs. The files are checked first (they exist, parse, the key matches the
// certificate): throws std::runtime_error naming the flag and file, so a bad file stops the
// start instead of failing every handshake later. Logs which transport the port uses.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsOptions& tls);

}  // namespace normserve
