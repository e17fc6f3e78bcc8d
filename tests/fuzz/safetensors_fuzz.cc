// libFuzzer target for the safetensors header parser (models/io/safetensors.cc), the one
// piece of the model loader that reads untrusted bytes. Parse must accept the input with
// every tensor inside the buffer, or throw ModelLoadError; anything else is a finding.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address -I. \
//     tests/fuzz/safetensors_fuzz.cc models/io/safetensors.cc -o safetensors_fuzz
//   ./safetensors_fuzz -max_total_time=60 -dict=tests/fuzz/safetensors.dict NEW_DIR \
//       tests/fuzz/corpus/safetensors
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "models/errors.h"
#include "models/io/safetensors.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using normserve::safetensors::DTypeSize;
  using normserve::safetensors::File;
  auto bytes = std::make_shared<const std::vector<uint8_t>>(data, data + size);
  const uint8_t* begin = bytes->data();
  const uint8_t* end = begin + bytes->size();
  try {
    const File file = File::Parse(bytes, "fuzz-input");
    for (const auto& [name, view] : file.tensors()) {
      uint64_t numel = 1;
      for (int64_t d : view.shape) {
        Check(d >= 0);
        numel *= static_cast<uint64_t>(d);
      }
      Check(view.nbytes == numel * DTypeSize(view.dtype));
      if (view.nbytes == 0) continue;
      Check(view.data >= begin + 8 && view.data < end);
      Check(view.nbytes <= static_cast<size_t>(end - view.data));
      // Touch every byte: AddressSanitizer catches any read outside the buffer.
      volatile uint8_t sink = 0;
      for (size_t i = 0; i < view.nbytes; ++i) sink = sink ^ view.data[i];
      (void)sink;
    }
    for (const auto& [key, value] : file.metadata()) Check(!key.empty() || value.size() < size);
  } catch (const normserve::ModelLoadError&) {
    // A refused input: the expected outcome for most of them.
  }
  return 0;
}
