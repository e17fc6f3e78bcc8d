#include "models/text/tokenizer.h"

#include <dlfcn.h>

#include <mutex>

#include "models/errors.h"
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

}  // namespace

struct Tokenizer::Impl {
  void* processor = nullptr;
  ~Impl() {
    if (processor) Api().destroy(processor);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  std::string error;
  impl->processor = Api().load(path, &error);
  if (!impl->processor) {
    throw ModelLoadError(path + ": not a loadable SentencePiece model: " + error);
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  std::string error;
  if (!Api().encode(impl_->processor, text, &ids, &error)) {
    throw InvalidInputError("the tokenizer rejected the text: " + error);
  }
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::string text, error;
  if (!Api().decode(impl_->processor, ids, &text, &error)) {
    throw InvalidInputError("the tokenizer cannot decode: " + error);
  }
  return text;
}

std::string Tokenizer::Piece(int id) const { return Api().piece(impl_->processor, id); }

int Tokenizer::vocab_size() const { return Api().size(impl_->processor); }

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
