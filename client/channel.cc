#include "client/channel.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace normserve::client {

namespace {

std::string ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(flag + " " + path + ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  // gRPC reports a file that is not PEM only as a failed handshake: say what is wrong here.
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    throw std::runtime_error(flag + " " + path + ": no PEM data in the file");
  }
  return text.str();
}

}  // namespace

void CheckChannelTls(const ChannelTls& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    throw std::invalid_argument("--tls-cert and --tls-key go together: give both or neither");
  }
  if (tls.ca_file.empty() && (!tls.cert_file.empty() || !tls.server_name.empty())) {
    throw std::invalid_argument(
        "--tls-cert, --tls-key and --tls-server-name need --tls-ca, the CA that signed the "
        "server's certificate");
  }
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target, const ChannelTls& tls,
                                           grpc::ChannelArguments args) {
  if (tls.ca_file.empty()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadPem("--tls-ca", tls.ca_file);
  if (!tls.cert_file.empty()) {
    options.pem_cert_chain = ReadPem("--tls-cert", tls.cert_file);
    options.pem_private_key = ReadPem("--tls-key", tls.key_file);
  }
  if (!tls.server_name.empty()) args.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(options), args);
}

}  // namespace normserve::client
