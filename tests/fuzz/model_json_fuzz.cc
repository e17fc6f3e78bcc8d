// libFuzzer target for model.json (server/model_json.cc): ParseModelJson must return a
// serving config within the documented limits, or throw ModelLoadError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "models/errors.h"
#include "server/model_json.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  normserve::ModelServingConfig c;
  try {
    c = normserve::ParseModelJson(text, "fuzz-input", normserve::BatcherConfig{});
  } catch (const normserve::ModelLoadError&) {
    return 0;  // a refused model.json
  }
  const normserve::BatcherConfig& b = c.batching;
  Check(b.max_batch_size >= 1 && b.max_batch_size <= 1024);
  Check(b.max_batch_tokens >= 1 && b.max_batch_tokens <= (1 << 20));
  Check(b.max_queue_delay.count() >= 0 && b.max_queue_delay.count() <= 10'000'000);
  Check(b.max_queue_size >= 1 && b.max_queue_size <= (1 << 20));
  Check(b.priority_levels >= 1 && b.priority_levels <= 16);
  Check(c.versions.latest >= 1 && c.versions.latest <= 64);
  for (int64_t v : c.versions.specific) Check(v >= 1);
  Check(c.weight > 0);
  return 0;
}
