// Blas: dense GEMMs through cuBLAS, row-major, bf16 inputs and fp32 accumulation.
//
//   ASSIGN_OR_RETURN(Blas blas, Blas::Create(stream));
//   blas.Linear(x, w, y);   // y [M, N] = x [M, K] @ w [N, K]^T, y bf16 or f32
//
// The handle runs on one stream with a fixed workspace, so its GEMMs can be captured in a
// CUDA graph.
#pragma once

#include <memory>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "runtime/cuda/device_tensor.h"

namespace moe::cuda {

class Blas {
 public:
  static absl::StatusOr<Blas> Create(cudaStream_t stream);

  // y [M, N] = x [M, K] @ w [N, K]^T. x and w bf16; y bf16 or f32 (written, not
  // accumulated). Only the first `rows` rows of x and y are used (rows <= M), so buffers
  // sized for the largest step serve every step.
  absl::Status Linear(const DeviceTensor& x, const DeviceTensor& w, DeviceTensor& y, int64_t rows) const;
  absl::Status Linear(const DeviceTensor& x, const DeviceTensor& w, DeviceTensor& y) const {
    return Linear(x, w, y, x.dim(0));
  }

 private:
  struct State;
  explicit Blas(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace moe::cuda
