// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length, a JSON header, then the raw tensor bytes. Reading memory-maps the file and
// checks every claim of the header against the file before any byte is handed out, since a
// model file is untrusted input. No torch here: the weight loader converts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace normserve::safetensors {

enum class DType { kF32, kF16, kBF16 };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // "F32", "F16", "BF16"

struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // valid while the File lives
  size_t nbytes;
};

class File {
 public:
  // Throws ModelLoadError naming the path and the problem for anything the header gets wrong.
  static File Open(const std::string& path);
  // The same checks on bytes in memory (the fuzz target); `name` appears in errors.
  static File Parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& name);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  static File FromBuffer(std::shared_ptr<const void> owner, const uint8_t* data, size_t size,
                         const std::string& name);

  std::shared_ptr<const void> owner_;  // the mapping or buffer behind every TensorView
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes the tensors in name order, data 8-byte aligned; throws ModelLoadError on I/O errors.
void Write(const std::string& path, const std::map<std::string, TensorToWrite>& tensors,
           const std::map<std::string, std::string>& metadata = {});

}  // namespace normserve::safetensors
