// Safetensors: reading (memory-mapped, validated) and writing of .safetensors files.
//
// Format: an 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data that
// follows the header), optional "__metadata__", then the data.
//
// Open() validates everything before any tensor is used: the header length is bounded and
// inside the file, the JSON parses, every dtype is known, shape x dtype size equals the byte
// range, ranges lie inside the file and do not overlap. Errors name the file and the tensor.
//
//   ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open("model.safetensors"));
//   ASSIGN_OR_RETURN(Tensor w, file->Get("lm_head.weight"));   // zero-copy view
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/mapped_file.h"
#include "runtime/tensor.h"

namespace moe {

struct TensorSpec {
  std::string name;
  DType dtype;
  Shape shape;
};

class SafetensorsFile {
 public:
  // The largest header accepted, as in the reference implementation.
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  bool Contains(const std::string& name) const { return entries_.count(name) > 0; }
  // Tensor names in file order.
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A view into the mapped file that keeps the mapping alive; a copy when the tensor's data
  // is not aligned to its element size in the file.
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // Drops the mapped pages of `name` from this process's resident memory (MappedFile::DropPages).
  void DropPages(const std::string& name) const;

 private:
  struct Entry {
    TensorSpec spec;
    size_t begin;  // absolute byte offset in the file
  };
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes `specs` in order, asking `fill` for each tensor's bytes one at a time, so a large
// file never has to be held in memory.
using TensorFiller = std::function<void(const TensorSpec& spec, absl::Span<std::byte> out)>;
absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorSpec> specs,
                              const TensorFiller& fill,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace moe
