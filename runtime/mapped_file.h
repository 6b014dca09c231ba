// MappedFile: a read-only memory map of a whole file, unmapped when the last user lets go.
//
//   ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> f, MappedFile::Open(path));
//   absl::Span<const std::byte> bytes = f->bytes();
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Span<const std::byte> bytes() const { return {data_, size_}; }
  // Drops the pages over [begin, begin + bytes) from this process's resident memory, for data
  // already copied out. The mapping is read-only, so nothing is lost: a later read faults
  // the pages back in from the page cache.
  void DropPages(size_t begin, size_t bytes) const;

 private:
  MappedFile(std::string path, const std::byte* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const std::byte* data_;
  size_t size_;
};

}  // namespace moe
