#include "client/auth_token.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace normserve::client {

std::string ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  if (!in) throw std::invalid_argument("--token-file " + path + ": cannot read it");
  const std::string text = content.str();
  const char* const kBlank = " \t\r\n";
  const size_t begin = text.find_first_not_of(kBlank);
  if (begin == std::string::npos) throw std::invalid_argument("--token-file " + path + " is empty");
  const std::string token = text.substr(begin, text.find_last_not_of(kBlank) + 1 - begin);
  for (char c : token) {
    if (c <= ' ' || c >= 0x7f) {
      throw std::invalid_argument("--token-file " + path +
                                  " must hold one token: printable ASCII, no whitespace inside");
    }
  }
  return token;
}

void AttachToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

}  // namespace normserve::client
