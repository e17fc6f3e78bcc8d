// libFuzzer target for config.json (models/io/model_config.cc): ParseModelConfig must accept
// the text with every invariant the model builder relies on, or throw ModelLoadError; and an
// accepted config must survive ModelConfigToJson -> ParseModelConfig unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "models/errors.h"
#include "models/io/model_config.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckInvariants(const normserve::ModelConfig& c) {
  Check(c.embed_dim >= 2 && c.embed_dim % 2 == 0);
  Check(c.ffn_dim >= 1 && c.attention_heads >= 1 && c.embed_dim % c.attention_heads == 0);
  Check(c.decoder_layers >= 1 && c.max_positions >= 1);
  Check(c.is_mt() ? c.encoder_layers >= 1 : c.encoder_layers == 0);
  Check(c.target_vocab_size >= 1 && (!c.is_mt() || c.source_vocab_size >= 1));
  for (int64_t id : {c.special.bos, c.special.padding(), c.special.eos, c.special.unk,
                     c.special.decoder_start}) {
    Check(id >= 0 && id < c.target_vocab_size);
    Check(!c.is_mt() || id < c.source_vocab_size);
  }
  Check(c.special.pad != c.special.eos && c.special.pad != c.special.unk);
  Check(c.special.pad != normserve::SpecialTokens::kNone || !c.is_mt());
  Check(c.attention_heads % c.key_value_heads() == 0);
  for (const std::string& file : c.tokenizer_files()) {
    Check(!file.empty() && file.find('/') == std::string::npos);
  }
  Check(!c.target_tokenizer.spm.empty());
  for (normserve::NormSite site : c.sites()) {
    const normserve::NormConfig& n = c.norm(site);  // throws (and aborts) when missing
    Check(n.eps > 0 && n.group_eps > 0 && n.partial > 0 && n.partial <= 1 && n.groups >= 1);
    Check(n.kind != normserve::NormKind::kPowerNorm || c.embed_dim % n.groups == 0);
  }
  Check(!c.norm_label().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  normserve::ModelConfig config;
  try {
    config = normserve::ParseModelConfig(text, "fuzz-input");
  } catch (const normserve::ModelLoadError&) {
    return 0;  // a refused config: the expected outcome for most inputs
  }
  CheckInvariants(config);
  const std::string written = normserve::ModelConfigToJson(config);
  try {
    const normserve::ModelConfig again = normserve::ParseModelConfig(written, "round-trip");
    Check(normserve::ModelConfigToJson(again) == written);
  } catch (const normserve::ModelLoadError&) {
    std::abort();  // the writer produced a config the parser refuses
  }
  return 0;
}
