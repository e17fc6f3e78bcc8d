#include "server/tls.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "server/log.h"

namespace normserve {
namespace {

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Certificate = std::unique_ptr<X509, decltype(&X509_free)>;
using PrivateKey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

std::string ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(flag + " " + path + ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) throw std::runtime_error(flag + " " + path + ": cannot read it");
  return text.str();
}

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// Encrypted keys would make OpenSSL ask for a passphrase on the terminal: refuse them instead.
int NoPassphrase(char*, int, int, void*) { return 0; }

// The first certificate of a PEM file (the leaf of a chain), or an error naming the file.
Certificate FirstCertificate(const std::string& flag, const std::string& path) {
  const std::string pem = ReadPem(flag, path);
  Bio bio = MemoryBio(pem);
  Certificate cert(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr), &X509_free);
  ERR_clear_error();
  if (!cert) throw std::runtime_error(flag + " " + path + ": no PEM certificate in the file");
  return cert;
}

PrivateKey ReadPrivateKey(const std::string& path) {
  const std::string pem = ReadPem("--tls-key", path);
  Bio bio = MemoryBio(pem);
  PrivateKey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr),
                 &EVP_PKEY_free);
  ERR_clear_error();
  if (!key) {
    throw std::runtime_error("--tls-key " + path + ": no unencrypted PEM private key in the file");
  }
  return key;
}

void CheckFiles(const TlsOptions& tls) {
  const Certificate cert = FirstCertificate("--tls-cert", tls.cert_file);
  const PrivateKey key = ReadPrivateKey(tls.key_file);
  const bool match = X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  if (!match) {
    throw std::runtime_error("--tls-key " + tls.key_file +
                             " is not the private key of the certificate in --tls-cert " +
                             tls.cert_file);
  }
  if (!tls.client_ca_file.empty()) FirstCertificate("--tls-client-ca", tls.client_ca_file);
}

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const TlsOptions& tls) {
  if (tls.cert_file.empty()) {
    LogInfo("gRPC transport: plaintext (no --tls-cert)");
    return grpc::InsecureServerCredentials();
  }
  CheckFiles(tls);
  const bool mutual = !tls.client_ca_file.empty();
  // The provider re-reads the files every refresh_secs and the next handshakes use what it
  // read: replacing the files rotates the certificate without a restart.
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file, static_cast<unsigned>(tls.refresh_secs));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  LogInfo(std::string("gRPC transport: ") +
          (mutual ? "mutual TLS (client certificates required, verified against " +
                        tls.client_ca_file + ")"
                  : "TLS") +
          ", certificate " + tls.cert_file + ", files re-read every " +
          std::to_string(tls.refresh_secs) + " s");
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace normserve
