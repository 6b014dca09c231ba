#include "runtime/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/status_macros.h"

namespace moe {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

bool IsNonNegativeInt(const json& j) {
  return j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  auto result = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  ASSIGN_OR_RETURN(result->file_, MappedFile::Open(path));
  const absl::Span<const std::byte> bytes = result->file_->bytes();
  if (bytes.size() < 8) {
    return Invalid(path, absl::StrCat("file is ", bytes.size(),
                                      " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);  // little-endian on every target we build for
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxHeaderBytes, " bytes"));
  }
  if (8 + header_len > bytes.size()) {
    return Invalid(path, absl::StrCat("header length ", header_len,
                                      " runs past the end of the file (", bytes.size(),
                                      " bytes)"));
  }
  const char* header = reinterpret_cast<const char*>(bytes.data() + 8);
  json root;
  try {
    root = json::parse(header, header + header_len);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    return Invalid(path, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return Invalid(path, "header is not a JSON object");

  const size_t data_start = 8 + header_len;
  const size_t data_size = bytes.size() - data_start;
  std::vector<std::pair<size_t, std::string>> ranges;  // (begin, name), to check overlaps
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Invalid(path, "__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return Invalid(path, absl::StrCat("__metadata__.", k, " is not a string"));
        result->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor \"", name, "\": ");
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
        !value.contains("data_offsets")) {
      return Invalid(path, where + "expected an object with dtype, shape and data_offsets");
    }
    if (!value["dtype"].is_string()) return Invalid(path, where + "dtype is not a string");
    absl::StatusOr<DType> dtype = DTypeFromSafetensors(value["dtype"].get<std::string>());
    if (!dtype.ok()) return Invalid(path, where + std::string(dtype.status().message()));

    const json& shape_json = value["shape"];
    if (!shape_json.is_array()) return Invalid(path, where + "shape is not an array");
    Shape shape;
    uint64_t numel = 1;
    for (const json& d : shape_json) {
      if (!IsNonNegativeInt(d)) return Invalid(path, where + "shape has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim) {
        return Invalid(path, where + "shape is too large");
      }
      numel *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !IsNonNegativeInt(offsets[0]) ||
        !IsNonNegativeInt(offsets[1])) {
      return Invalid(path, where + "data_offsets must be two non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end) {
      return Invalid(path, where + absl::StrCat("data_offsets [", begin, ", ", end, ") are reversed"));
    }
    const uint64_t expected = numel * DTypeSize(*dtype);
    if (end - begin != expected) {
      return Invalid(path, where + absl::StrCat("shape ", ShapeString(shape), " of ",
                                                DTypeName(*dtype), " needs ", expected,
                                                " bytes but data_offsets span ", end - begin));
    }
    if (end > data_size) {
      return Invalid(path, where + absl::StrCat("data_offsets [", begin, ", ", end,
                                                ") run past the end of the data (", data_size,
                                                " bytes): the file is truncated"));
    }
    if (begin != end) ranges.emplace_back(begin, name);  // empty tensors occupy nothing
    result->entries_[name] = Entry{TensorSpec{name, *dtype, std::move(shape)},
                                   static_cast<size_t>(data_start + begin)};
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Entry& prev = result->entries_[ranges[i - 1].second];
    const size_t prev_end = prev.begin - data_start + NumElements(prev.spec.shape) * DTypeSize(prev.spec.dtype);
    if (ranges[i].first < prev_end) {
      return Invalid(path, absl::StrCat("tensors \"", ranges[i - 1].second, "\" and \"",
                                        ranges[i].second, "\" overlap"));
    }
  }
  return std::shared_ptr<const SafetensorsFile>(std::move(result));
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::pair<size_t, std::string>> order;
  for (const auto& [name, entry] : entries_) order.emplace_back(entry.begin, name);
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  for (auto& [begin, name] : order) out.push_back(std::move(name));
  return out;
}

void SafetensorsFile::DropPages(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return;
  const TensorSpec& spec = it->second.spec;
  file_->DropPages(it->second.begin, NumElements(spec.shape) * DTypeSize(spec.dtype));
}

absl::StatusOr<Tensor> SafetensorsFile::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(path(), ": no tensor \"", name, "\""));
  }
  const Entry& e = it->second;
  const std::byte* data = file_->bytes().data() + e.begin;
  if (reinterpret_cast<uintptr_t>(data) % DTypeSize(e.spec.dtype) == 0) {
    return Tensor::Borrow(file_, data, e.spec.dtype, e.spec.shape);
  }
  // The format does not promise aligned data (writers pad the header to 8 bytes, but older
  // ones did not): an element that straddles its alignment is read through an aligned copy.
  Tensor copy = Tensor::Empty(e.spec.dtype, e.spec.shape);
  std::memcpy(copy.data<std::byte>(), data, copy.nbytes());
  return copy;
}

absl::Status WriteSafetensors(const std::string& path, absl::Span<const TensorSpec> specs,
                              const TensorFiller& fill,
                              const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    const uint64_t bytes = NumElements(spec.shape) * DTypeSize(spec.dtype);
    header[spec.name] = {{"dtype", DTypeToSafetensors(spec.dtype)},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // keep the data 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const uint64_t header_len = text.size();
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<std::byte> buffer;
  for (const TensorSpec& spec : specs) {
    buffer.resize(NumElements(spec.shape) * DTypeSize(spec.dtype));
    fill(spec, absl::MakeSpan(buffer));
    out.write(reinterpret_cast<const char*>(buffer.data()),
              static_cast<std::streamsize>(buffer.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

}  // namespace moe
