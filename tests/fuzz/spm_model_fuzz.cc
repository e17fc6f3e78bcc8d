// libFuzzer target for SentencePiece model files, which arrive with a model version and are
// untrusted: loaded through the project's shim (models/text/spm_shim.cc, linked here against
// Debian's libsentencepiece directly), then used as a request would use them. A model either
// fails to load with an error or encodes, decodes and names its pieces within its vocabulary.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "models/text/spm_api.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

// The shim loads from a path, as the server does: the input goes into an in-memory file.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size) : fd_(memfd_create("spm-fuzz", MFD_CLOEXEC)) {
    Check(fd_ >= 0);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = write(fd_, data + done, size - done);
      Check(n > 0);
      done += static_cast<size_t>(n);
    }
  }
  ~MemoryFile() { close(fd_); }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const normserve::SpmApi& spm = *normserve_spm_api();
  const MemoryFile file(data, size);
  std::string error;
  void* processor = spm.load(file.path(), &error);
  if (!processor) {
    Check(!error.empty());
    return 0;
  }
  const int pieces = spm.size(processor);
  Check(pieces >= 0);
  for (int id = 0; id < pieces; ++id) spm.piece(processor, id);
  for (const std::string text : {"das Haus ist klein", "Straße über Äpfel", " a  b\tc ", "x"}) {
    std::vector<int> ids;
    if (!spm.encode(processor, text, &ids, &error)) continue;
    for (int id : ids) Check(id >= 0 && id < pieces);
    std::string decoded;
    spm.decode(processor, ids, &decoded, &error);
  }
  spm.destroy(processor);
  return 0;
}
