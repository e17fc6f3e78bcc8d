// libnormserve_spm.so: SentencePiece behind plain function pointers (see spm_api.h).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <memory>

#include "models/text/spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

const SentencePieceProcessor& Processor(const void* p) {
  return *static_cast<const SentencePieceProcessor*>(p);
}

// SentencePiece reports most problems as a status but throws from some (a model file with an
// empty piece makes its trie builder throw): every entry point turns both into `error`, so
// that no exception crosses the shim's boundary and the caller can name the file.
template <typename Call>
bool Guarded(std::string* error, Call&& call) {
  try {
    const auto status = call();
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
}

void* Load(const std::string& path, std::string* error) {
  auto processor = std::make_unique<SentencePieceProcessor>();
  if (!Guarded(error, [&] { return processor->Load(path); })) return nullptr;
  return processor.release();
}

void Destroy(void* p) { delete static_cast<SentencePieceProcessor*>(p); }

bool Encode(const void* p, const std::string& text, std::vector<int>* ids, std::string* error) {
  return Guarded(error, [&] { return Processor(p).Encode(text, ids); });
}

bool Decode(const void* p, const std::vector<int>& ids, std::string* text, std::string* error) {
  return Guarded(error, [&] { return Processor(p).Decode(ids, text); });
}

bool EncodePieces(const void* p, const std::string& text, std::vector<std::string>* pieces,
                  std::string* error) {
  return Guarded(error, [&] { return Processor(p).Encode(text, pieces); });
}

bool DecodePieces(const void* p, const std::vector<std::string>& pieces, std::string* text,
                  std::string* error) {
  return Guarded(error, [&] { return Processor(p).Decode(pieces, text); });
}

std::string Piece(const void* p, int id) { return Processor(p).IdToPiece(id); }

int Size(const void* p) { return Processor(p).GetPieceSize(); }

bool Train(const std::string& args, std::string* error) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

constexpr normserve::SpmApi kApi = {Load,         Destroy, Encode, Decode, EncodePieces,
                                    DecodePieces, Piece,   Size,   Train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const normserve::SpmApi* normserve_spm_api() {
  return &kApi;
}
