// The table of functions that libnormserve_spm.so (spm_shim.cc) exports.
//
// Debian's libsentencepiece carries its own copy of protobuf 3.14 and exports its symbols;
// LibTorch and gRPC load the system protobuf 3.21. Linked into one program the two copies
// bind to each other and the process aborts at start-up. So SentencePiece is reached only
// through this shim, which tokenizer.cc opens with RTLD_LOCAL | RTLD_DEEPBIND: the shim
// and SentencePiece then resolve protobuf inside their own copy and nothing leaks out.
#pragma once

#include <string>
#include <vector>

namespace normserve {

struct SpmApi {
  void* (*load)(const std::string& path, std::string* error);
  void (*destroy)(void* processor);
  bool (*encode)(const void* processor, const std::string& text, std::vector<int>* ids,
                 std::string* error);
  bool (*decode)(const void* processor, const std::vector<int>& ids, std::string* text,
                 std::string* error);
  bool (*encode_pieces)(const void* processor, const std::string& text,
                        std::vector<std::string>* pieces, std::string* error);
  bool (*decode_pieces)(const void* processor, const std::vector<std::string>& pieces,
                        std::string* text, std::string* error);
  std::string (*piece)(const void* processor, int id);
  int (*size)(const void* processor);
  bool (*train)(const std::string& args, std::string* error);
};

}  // namespace normserve

// The shim's one exported symbol.
extern "C" const normserve::SpmApi* normserve_spm_api();
