#include "runtime/cuda/blas.h"

#include <cublas_v2.h>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLAS's advice for Hopper

absl::Status BlasError(cublasStatus_t status, const char* what) {
  return absl::InternalError(absl::StrCat(what, " failed: ", cublasGetStatusName(status), " (",
                                          cublasGetStatusString(status), ")"));
}

}  // namespace

struct Blas::State {
  cublasHandle_t handle = nullptr;
  DeviceTensor workspace;
  ~State() {
    if (handle != nullptr) cublasDestroy(handle);
  }
};

absl::StatusOr<Blas> Blas::Create(cudaStream_t stream) {
  auto state = std::make_shared<State>();
  if (cublasStatus_t s = cublasCreate(&state->handle); s != CUBLAS_STATUS_SUCCESS) {
    state->handle = nullptr;
    return BlasError(s, "cublasCreate");
  }
  auto workspace = DeviceTensor::Empty(DType::kI32, {kWorkspaceBytes / 4});
  if (!workspace.ok()) return workspace.status();
  state->workspace = *std::move(workspace);
  if (cublasStatus_t s = cublasSetStream(state->handle, stream); s != CUBLAS_STATUS_SUCCESS) {
    return BlasError(s, "cublasSetStream");
  }
  if (cublasStatus_t s = cublasSetWorkspace(state->handle, state->workspace.raw(), kWorkspaceBytes);
      s != CUBLAS_STATUS_SUCCESS) {
    return BlasError(s, "cublasSetWorkspace");
  }
  return Blas(std::move(state));
}

absl::Status Blas::Linear(const DeviceTensor& x, const DeviceTensor& w, DeviceTensor& y, int64_t rows) const {
  if (x.rank() != 2 || w.rank() != 2 || y.rank() != 2 || x.dtype() != DType::kBF16 ||
      w.dtype() != DType::kBF16 || (y.dtype() != DType::kBF16 && y.dtype() != DType::kF32) ||
      x.dim(1) != w.dim(1) || y.dim(1) != w.dim(0) || rows > x.dim(0) || rows > y.dim(0) || rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Linear needs x [M, K] bf16, w [N, K] bf16, y [M, N] bf16|f32; got x ", DTypeName(x.dtype()),
        ShapeString(x.shape()), ", w ", DTypeName(w.dtype()), ShapeString(w.shape()), ", y ",
        DTypeName(y.dtype()), ShapeString(y.shape()), " for ", rows, " rows"));
  }
  if (rows == 0) return absl::OkStatus();
  const int m = static_cast<int>(w.dim(0)), n = static_cast<int>(rows), k = static_cast<int>(w.dim(1));
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major y = x w^T is column-major y^T = w x^T: w is column-major [K, N] (transposed),
  // x column-major [K, M].
  const cublasStatus_t s = cublasGemmEx(
      state_->handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.raw(), CUDA_R_16BF, k, x.raw(),
      CUDA_R_16BF, k, &beta, y.raw(), y.dtype() == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, m,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) return BlasError(s, "cublasGemmEx");
  return absl::OkStatus();
}

}  // namespace moe::cuda
