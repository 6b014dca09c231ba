// DeviceTensor: a typed, shaped, row-major view over GPU memory that it keeps alive.
//
// Like runtime's Tensor, but the bytes live on the device: memory comes from cudaMalloc
// and is freed with the last view that refers to it. Slices and reshapes share storage.
// Host <-> device copies convert dtypes on the host.
//
//   ASSIGN_OR_RETURN(DeviceTensor w, DeviceTensor::FromHost(host_w, DType::kBF16));
//   ASSIGN_OR_RETURN(DeviceTensor x, DeviceTensor::Empty(DType::kBF16, {T, D}));  // [T, D]
//   ASSIGN_OR_RETURN(Tensor back, x.ToHost(DType::kF32));                          // synchronizes
#pragma once

#include <cstdint>
#include <memory>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

namespace moe::cuda {

class DeviceTensor {
 public:
  DeviceTensor() = default;

  // Uninitialized device memory.
  static absl::StatusOr<DeviceTensor> Empty(DType dtype, Shape shape);
  // A device copy of `host` converted to `dtype` (floating types; integers copy as they are).
  static absl::StatusOr<DeviceTensor> FromHost(const Tensor& host, DType dtype);

  // A host copy converted to `dtype`; waits for all work on the device.
  absl::StatusOr<Tensor> ToHost(DType dtype) const;
  // Overwrites the contents with 0xFF bytes (NaN in f32, bf16 and f16), so a kernel that
  // skips an element shows up in a test.
  absl::Status Poison(cudaStream_t stream = nullptr);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // Rows [begin, end) of the first dimension, sharing storage.
  DeviceTensor Slice(int64_t begin, int64_t end) const;
  // Same elements, another shape (numel must match).
  DeviceTensor Reshape(Shape shape) const;

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
};

}  // namespace moe::cuda
