// safetensors files (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length, a JSON header, then the raw tensor bytes. Reading copies the file into memory
// (never a mapping: safetensors.cc says why) and checks every claim of the header against those
// bytes before any is handed out, since a model file is untrusted input. No torch here: the
// weight loader converts.
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
  // Reads the file, then Parse(); throws ModelLoadError naming the path and the problem for
  // anything the header gets wrong, and for a file that changes while it is read.
  static File Open(const std::string& path);
  // The checks on bytes in memory (also the fuzz target); `name` appears in errors.
  static File Parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& name);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<const std::vector<uint8_t>> bytes_;  // the buffer behind every TensorView
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
