#include "models/text/tokenizer.h"

#include <dlfcn.h>

#include <mutex>
#include <unordered_map>

#include "models/errors.h"
#include "models/io/text_file.h"
#include "models/text/spm_api.h"

#ifndef NORMSERVE_SPM_SHIM_BUILD_PATH
#define NORMSERVE_SPM_SHIM_BUILD_PATH ""
#endif

namespace normserve {
namespace {

constexpr char kShimName[] = "libnormserve_spm.so";

// Beside the executable, in ../lib of an installed tree, or where the build put it.
std::vector<std::string> ShimCandidates() {
  std::vector<std::string> out;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&ShimCandidates), &info) && info.dli_fname) {
    std::string dir = info.dli_fname;
    dir = dir.substr(0, dir.find_last_of('/') + 1);
    out.push_back(dir + kShimName);
    out.push_back(dir + "../lib/" + kShimName);
  }
  if (const char* env = std::getenv("NORMSERVE_SPM_SHIM")) out.insert(out.begin(), env);
  out.push_back(NORMSERVE_SPM_SHIM_BUILD_PATH);
  return out;
}

const SpmApi& Api() {
  static const SpmApi* api = [] {
    std::string tried;
    for (const std::string& path : ShimCandidates()) {
      if (path.empty()) continue;
      void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!handle) {
        tried += "\n  " + path + ": " + dlerror();
        continue;
      }
      auto entry = reinterpret_cast<const SpmApi* (*)()>(dlsym(handle, "normserve_spm_api"));
      if (entry) return entry();
      tried += "\n  " + path + ": no normserve_spm_api symbol";
    }
    throw ModelLoadError(std::string("cannot load the SentencePiece shim ") + kShimName +
                         " (set NORMSERVE_SPM_SHIM to its path); tried:" + tried);
  }();
  return *api;
}

// Marian's tags (see TokenizerVocabulary): the leading tag, if any, and the text with every
// tag cut. A tag at i runs to the last "<<" of its line that starts at i + 3 or later, as the
// greedy regex ">>.+<<" does; one pass, whatever the input.
std::pair<std::string, std::string> CutLanguageTags(const std::string& text) {
  std::string leading, rest;
  size_t line_end = 0, last_close = std::string::npos;  // of the line holding i
  for (size_t i = 0; i < text.size();) {
    if (i >= line_end) {
      line_end = text.find('\n', i);
      if (line_end == std::string::npos) line_end = text.size();
      const size_t close = line_end >= 2 ? text.rfind("<<", line_end - 2) : std::string::npos;
      last_close = close != std::string::npos && close >= i ? close : std::string::npos;
      if (line_end < text.size()) ++line_end;  // the newline belongs to its line
    }
    if (text.compare(i, 2, ">>") == 0 && last_close != std::string::npos && last_close >= i + 3) {
      if (i == 0) leading = text.substr(0, last_close + 2);
      i = last_close + 2;
      continue;
    }
    rest += text[i++];
  }
  return {leading, rest};
}

}  // namespace

struct Tokenizer::Impl {
  void* processor = nullptr;
  // With a vocabulary file: piece -> model id and back; a model id without a piece is "".
  std::unordered_map<std::string, int> ids;
  std::vector<std::string> pieces;
  TokenizerVocabulary vocabulary;
  ~Impl() {
    if (processor) Api().destroy(processor);
  }

  int IdOf(const std::string& piece) const {
    const auto it = ids.find(piece);
    return it == ids.end() ? vocabulary.unk : it->second;
  }
  void ReadVocabulary(const std::string& path);
};

void Tokenizer::Impl::ReadVocabulary(const std::string& path) {
  const nlohmann::json root = ReadJsonFile(path);
  if (!root.is_object() || root.empty()) {
    throw ModelLoadError(path + ": must be a JSON object {\"piece\": id, ...}");
  }
  constexpr int64_t kMaxId = int64_t{1} << 24;  // config.json's vocabulary bound
  for (const auto& [piece, id] : root.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxId) {
      throw ModelLoadError(path + ": the id of \"" + piece + "\" must be an integer in 0.." +
                           std::to_string(kMaxId - 1) + ", got " + id.dump());
    }
    const int value = static_cast<int>(id.get<int64_t>());
    if (static_cast<size_t>(value) >= pieces.size()) pieces.resize(value + 1);
    if (!pieces[value].empty()) {
      throw ModelLoadError(path + ": id " + std::to_string(value) + " belongs to both \"" +
                           pieces[value] + "\" and \"" + piece + "\"");
    }
    pieces[value] = piece;
    ids.emplace(piece, value);
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path,
                                           const TokenizerVocabulary& vocabulary) {
  auto impl = std::make_unique<Impl>();
  std::string error;
  impl->processor = Api().load(path, &error);
  if (!impl->processor) {
    throw ModelLoadError(path + ": not a loadable SentencePiece model: " + error);
  }
  impl->vocabulary = vocabulary;
  if (!vocabulary.vocab_path.empty()) impl->ReadVocabulary(vocabulary.vocab_path);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::string error;
  std::vector<int> ids;
  if (!has_vocabulary()) {
    if (!Api().encode(impl_->processor, text, &ids, &error)) {
      throw InvalidInputError("the tokenizer rejected the text: " + error);
    }
    return ids;
  }
  std::string tag, rest;
  if (impl_->vocabulary.language_tags) {
    std::tie(tag, rest) = CutLanguageTags(text);
  }
  const std::string& untagged = impl_->vocabulary.language_tags ? rest : text;
  std::vector<std::string> pieces;
  if (!Api().encode_pieces(impl_->processor, untagged, &pieces, &error)) {
    throw InvalidInputError("the tokenizer rejected the text: " + error);
  }
  if (!tag.empty()) ids.push_back(impl_->IdOf(tag));
  for (const std::string& piece : pieces) ids.push_back(impl_->IdOf(piece));
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text, error;
  if (!has_vocabulary()) {
    if (!Api().decode(impl_->processor, ids, &text, &error)) {
      throw InvalidInputError("the tokenizer cannot decode: " + error);
    }
    return text;
  }
  std::vector<std::string> pieces;
  for (int id : ids) pieces.push_back(Piece(id));
  if (!Api().decode_pieces(impl_->processor, pieces, &text, &error)) {
    throw InvalidInputError("the tokenizer cannot decode: " + error);
  }
  return text;
}

std::string Tokenizer::Piece(int id) const {
  if (!has_vocabulary()) return Api().piece(impl_->processor, id);
  return id >= 0 && static_cast<size_t>(id) < impl_->pieces.size() ? impl_->pieces[id] : "";
}

int Tokenizer::vocab_size() const {
  return has_vocabulary() ? static_cast<int>(impl_->pieces.size()) : Api().size(impl_->processor);
}

bool Tokenizer::has_vocabulary() const { return !impl_->pieces.empty(); }

void TrainTokenizer(const TokenizerTrainingOptions& o) {
  const std::string args = "--input=" + o.input_file + " --model_prefix=" + o.model_prefix +
                           " --vocab_size=" + std::to_string(o.vocab_size) +
                           " --model_type=" + o.model_type +
                           " --character_coverage=1.0 --bos_id=0 --pad_id=1 --eos_id=2"
                           " --unk_id=3 --hard_vocab_limit=false --minloglevel=2";
  std::string error;
  if (!Api().train(args, &error)) {
    throw ModelLoadError("training the tokenizer on " + o.input_file + " failed: " + error);
  }
}

}  // namespace normserve
