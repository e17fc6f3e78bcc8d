#include "client/channel_flags.h"

#include <CLI/App.hpp>

namespace normserve::client {

void AddChannelTlsOptions(CLI::App* app, ChannelTls* tls) {
  const std::string group = "TLS (default: plaintext)";
  app->add_option("--tls-ca", tls->ca_file,
                  "use TLS and verify the server's certificate with the CAs in FILE")
      ->type_name("FILE")
      ->group(group);
  app->add_option("--tls-cert", tls->cert_file,
                  "client certificate chain for mutual TLS (with --tls-key)")
      ->type_name("FILE")
      ->group(group);
  app->add_option("--tls-key", tls->key_file, "private key of --tls-cert")
      ->type_name("FILE")
      ->group(group);
  app->add_option("--tls-server-name", tls->server_name,
                  "the name the server's certificate is issued to, when the address is\n"
                  "another (e.g. an IP address)")
      ->type_name("NAME")
      ->group(group);
}

}  // namespace normserve::client
