// PinnedBuffer: page-locked host memory (cudaHostAlloc), the host side of asynchronous
// copies, freed with the buffer.
//
//   ASSIGN_OR_RETURN(PinnedBuffer staging, PinnedBuffer::Create(bytes));
//   cudaMemcpyAsync(device, staging.data(), bytes, cudaMemcpyHostToDevice, stream);
#pragma once

#include <cstddef>
#include <memory>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {

class PinnedBuffer {
 public:
  PinnedBuffer() = default;

  static absl::StatusOr<PinnedBuffer> Create(size_t bytes) {
    void* p = nullptr;
    CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocDefault));
    PinnedBuffer b;
    b.data_.reset(p);
    b.bytes_ = bytes;
    return b;
  }

  void* data() const { return data_.get(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_.get());
  }
  size_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const { cudaFreeHost(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t bytes_ = 0;
};

}  // namespace moe::cuda
