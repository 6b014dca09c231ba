#include "runtime/cuda/device_tensor.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

bool IsFloating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace

absl::StatusOr<DeviceTensor> DeviceTensor::Empty(DType dtype, Shape shape) {
  for (int64_t d : shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", ShapeString(shape)));
  }
  DeviceTensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  const size_t bytes = std::max<size_t>(t.nbytes(), 1);
  void* ptr = nullptr;
  const cudaError_t error = cudaMalloc(&ptr, bytes);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc of ", bytes, " bytes for a ",
                                                     DTypeName(dtype), " ", ShapeString(t.shape_),
                                                     " tensor failed: ", cudaGetErrorString(error)));
  }
  t.storage_ = std::shared_ptr<void>(ptr, [](void* p) { cudaFree(p); });
  t.data_ = ptr;
  return t;
}

absl::StatusOr<DeviceTensor> DeviceTensor::FromHost(const Tensor& host, DType dtype) {
  if (!host.defined()) return absl::InvalidArgumentError("cannot copy an undefined tensor to the device");
  const bool convert = host.dtype() != dtype;
  if (convert && !(IsFloating(host.dtype()) || host.dtype() == DType::kF8E4M3) && IsFloating(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert ", DTypeName(host.dtype()), " to ",
                                                   DTypeName(dtype), " for the device"));
  }
  const Tensor staged = convert ? host.To(dtype) : host;
  auto t = Empty(dtype, host.shape());
  if (!t.ok()) return t.status();
  CUDA_RETURN_IF_ERROR(cudaMemcpy(t->raw(), staged.raw(), staged.nbytes(), cudaMemcpyHostToDevice));
  return t;
}

absl::StatusOr<Tensor> DeviceTensor::ToHost(DType dtype) const {
  Tensor staged = Tensor::Empty(dtype_, shape_);
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  CUDA_RETURN_IF_ERROR(cudaMemcpy(staged.raw(), data_, nbytes(), cudaMemcpyDeviceToHost));
  if (dtype == dtype_) return staged;
  if (!IsFloating(dtype) || !IsFloating(dtype_)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert a device ", DTypeName(dtype_),
                                                   " tensor to ", DTypeName(dtype)));
  }
  return staged.To(dtype);
}

absl::Status DeviceTensor::Poison(cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(data_, 0xFF, nbytes(), stream));
  return absl::OkStatus();
}

DeviceTensor DeviceTensor::Slice(int64_t begin, int64_t end) const {
  CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= dim(0));
  DeviceTensor t = *this;
  int64_t row_bytes = DTypeSize(dtype_);
  for (int i = 1; i < rank(); ++i) row_bytes *= shape_[i];
  t.data_ = static_cast<char*>(data_) + begin * row_bytes;
  t.shape_[0] = end - begin;
  return t;
}

DeviceTensor DeviceTensor::Reshape(Shape shape) const {
  CHECK_EQ(NumElements(shape), numel());
  DeviceTensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace moe::cuda
