#include "models/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "models/errors.h"

namespace normserve::safetensors {
namespace {

// Headers are a few KB per hundred tensors; anything near this is not a model file.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// Keeps numel * element size far from overflow.
constexpr uint64_t kMaxElements = 1ull << 60;

[[noreturn]] void Fail(const std::string& name, const std::string& problem) {
  throw ModelLoadError(name + ": " + problem);
}

bool ParseDType(const std::string& s, DType* out) {
  if (s == "F32")
    *out = DType::kF32;
  else if (s == "F16")
    *out = DType::kF16;
  else if (s == "BF16")
    *out = DType::kBF16;
  else
    return false;
  return true;
}

// Reads the whole file into memory. Weights are read, not memory-mapped: a mapped file that
// is truncated or rewritten in place while it is being read raises SIGBUS in the reader,
// which kills a server that polls its repository. Reading turns such a race into an error
// (a short read, or a size or modification time that moved) or into bytes that the parser
// then checks like any other.
std::shared_ptr<const std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat before {};
  if (fstat(fd, &before) != 0 || !S_ISREG(before.st_mode)) Fail(path, "not a regular file");
  auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(before.st_size));
  size_t done = 0;
  while (done < bytes->size()) {
    const ssize_t n =
        ::pread(fd, bytes->data() + done, bytes->size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail(path, std::string("read failed: ") + std::strerror(errno));
    if (n == 0) {
      Fail(path, "file shrank to " + std::to_string(done) + " bytes while being read (" +
                     std::to_string(bytes->size()) + " expected); it is being rewritten");
    }
    done += static_cast<size_t>(n);
  }
  struct stat after {};
  if (fstat(fd, &after) != 0 || after.st_size != before.st_size ||
      after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
      after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
    Fail(path, "file changed while being read; it is being rewritten");
  }
  return bytes;
}

}  // namespace

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

File File::Open(const std::string& path) { return Parse(ReadWholeFile(path), path); }

File File::Parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& name) {
  const uint8_t* data = bytes->data();
  const size_t size = bytes->size();
  if (size < 8) Fail(name, "file is " + std::to_string(size) + " bytes, too short for a header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    Fail(name, "header length " + std::to_string(header_len) + " exceeds the file size " +
                   std::to_string(size) + " (truncated or not a safetensors file)");
  }
  const uint8_t* payload = data + 8 + header_len;
  const size_t payload_size = size - 8 - header_len;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data + 8, data + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    Fail(name, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) Fail(name, "header must be a JSON object");

  File file;
  file.bytes_ = std::move(bytes);
  std::vector<std::pair<size_t, size_t>> ranges;
  std::vector<const std::string*> range_names;
  for (const auto& [key, entry] : header.items()) {
    if (key == "__metadata__") {
      if (!entry.is_object()) Fail(name, "__metadata__ must be an object of strings");
      for (const auto& [mk, mv] : entry.items()) {
        if (!mv.is_string()) Fail(name, "__metadata__ value of '" + mk + "' is not a string");
        file.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + key + "'";
    if (!entry.is_object()) Fail(name, where + ": entry must be an object");
    const auto dtype_it = entry.find("dtype");
    const auto shape_it = entry.find("shape");
    const auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || shape_it == entry.end() || offsets_it == entry.end()) {
      Fail(name, where + ": needs dtype, shape and data_offsets");
    }
    TensorView view{};
    if (!dtype_it->is_string() || !ParseDType(dtype_it->get<std::string>(), &view.dtype)) {
      Fail(name, where + ": dtype " + dtype_it->dump() + " is not supported (F32, F16, BF16)");
    }
    if (!shape_it->is_array()) Fail(name, where + ": shape must be an array");
    uint64_t numel = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned())
        Fail(name, where + ": shape has a non-integer or negative dim");
      const uint64_t n = dim.get<uint64_t>();
      // Each dim on its own too: with a zero dim elsewhere the product stays 0.
      if (n > kMaxElements || __builtin_mul_overflow(numel, n, &numel) || numel > kMaxElements) {
        Fail(name, where + ": shape is too large");
      }
      view.shape.push_back(static_cast<int64_t>(n));
    }
    if (!offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      Fail(name, where + ": data_offsets must be [begin, end]");
    }
    const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
    const uint64_t end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end || end > payload_size) {
      Fail(name, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     "] fall outside the " + std::to_string(payload_size) +
                     " data bytes (truncated file?)");
    }
    const uint64_t expected = numel * DTypeSize(view.dtype);
    if (end - begin != expected) {
      Fail(name, where + ": data_offsets span " + std::to_string(end - begin) +
                     " bytes but dtype and shape need " + std::to_string(expected));
    }
    view.data = payload + begin;
    view.nbytes = static_cast<size_t>(expected);
    auto [it, inserted] = file.tensors_.emplace(key, std::move(view));
    ranges.emplace_back(begin, end);
    range_names.push_back(&it->first);
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = ranges[order[i - 1]];
    const auto& cur = ranges[order[i]];
    if (cur.first < prev.second) {
      Fail(name, "tensors '" + *range_names[order[i - 1]] + "' and '" + *range_names[order[i]] +
                     "' have overlapping data_offsets");
    }
  }
  return file;
}

void Write(const std::string& path, const std::map<std::string, TensorToWrite>& tensors,
           const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [key, t] : tensors) {
    header[key] = {{"dtype", DTypeName(t.dtype)},
                   {"shape", t.shape},
                   {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) Fail(path, "cannot open for writing");
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>((uint64_t{text.size()} >> (8 * i)) & 0xff);
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [key, t] : tensors) {
    out.write(static_cast<const char*>(t.data), static_cast<std::streamsize>(t.nbytes));
  }
  if (!out.flush()) Fail(path, "write failed");
}

}  // namespace normserve::safetensors
