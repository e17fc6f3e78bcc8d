// libnormserve_spm.so: SentencePiece behind plain function pointers (see spm_api.h).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "models/text/spm_api.h"

namespace {

using sentencepiece::SentencePieceProcessor;

const SentencePieceProcessor& Processor(const void* p) {
  return *static_cast<const SentencePieceProcessor*>(p);
}

void* Load(const std::string& path, std::string* error) {
  auto* processor = new SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    delete processor;
    return nullptr;
  }
  return processor;
}

void Destroy(void* p) { delete static_cast<SentencePieceProcessor*>(p); }

bool Encode(const void* p, const std::string& text, std::vector<int>* ids, std::string* error) {
  const auto status = Processor(p).Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool Decode(const void* p, const std::vector<int>& ids, std::string* text, std::string* error) {
  const auto status = Processor(p).Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

std::string Piece(const void* p, int id) { return Processor(p).IdToPiece(id); }

int Size(const void* p) { return Processor(p).GetPieceSize(); }

bool Train(const std::string& args, std::string* error) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

constexpr normserve::SpmApi kApi = {Load, Destroy, Encode, Decode, Piece, Size, Train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const normserve::SpmApi* normserve_spm_api() {
  return &kApi;
}
