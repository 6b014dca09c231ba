#include "runtime/cuda/bench_util.h"

#include "runtime/cuda/blas.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/status_macros.h"

namespace moe::cuda {

absl::Status Synchronize(cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::StatusOr<double> TimeOnStream(cudaStream_t stream, int iterations,
                                    const std::function<absl::Status()>& work) {
  for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(work());
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  absl::Status status = absl::OkStatus();
  if (cudaEventRecord(start, stream) != cudaSuccess) status = absl::InternalError("cudaEventRecord failed");
  for (int i = 0; i < iterations && status.ok(); ++i) status = work();
  float ms = 0;
  if (status.ok()) {
    const cudaError_t e = [&] {
      cudaError_t r = cudaEventRecord(stop, stream);
      if (r == cudaSuccess) r = cudaEventSynchronize(stop);
      if (r == cudaSuccess) r = cudaEventElapsedTime(&ms, start, stop);
      return r;
    }();
    if (e != cudaSuccess) status = CudaError(e, "timing events", __FILE__, __LINE__);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  RETURN_IF_ERROR(status);
  return 1000.0 * ms / iterations;
}

absl::StatusOr<Ceilings> MeasureCeilings(cudaStream_t stream) {
  Ceilings c;
  {
    const int64_t bytes = int64_t{2} << 30;  // 2 GiB each way: far beyond the L2
    ASSIGN_OR_RETURN(DeviceTensor a, DeviceTensor::Empty(DType::kI32, {bytes / 4}));
    ASSIGN_OR_RETURN(DeviceTensor b, DeviceTensor::Empty(DType::kI32, {bytes / 4}));
    ASSIGN_OR_RETURN(const double us, TimeOnStream(stream, 10, [&]() -> absl::Status {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.raw(), a.raw(), bytes, cudaMemcpyDeviceToDevice, stream));
      return absl::OkStatus();
    }));
    c.copy_gb_per_s = 2.0 * bytes / (us * 1e3);
  }
  {
    const int64_t n = 8192;
    ASSIGN_OR_RETURN(DeviceTensor x, DeviceTensor::Empty(DType::kBF16, {n, n}));
    ASSIGN_OR_RETURN(DeviceTensor w, DeviceTensor::Empty(DType::kBF16, {n, n}));
    ASSIGN_OR_RETURN(DeviceTensor y, DeviceTensor::Empty(DType::kBF16, {n, n}));
    FillUniform({.data = x.raw(), .count = x.numel(), .seed = 1}, stream);
    FillUniform({.data = w.raw(), .count = w.numel(), .seed = 2, .scale = 0.01f}, stream);
    ASSIGN_OR_RETURN(Blas blas, Blas::Create(stream));
    ASSIGN_OR_RETURN(const double us, TimeOnStream(stream, 10, [&] { return blas.Linear(x, w, y); }));
    c.gemm_tflop_per_s = 2.0 * n * n * n / (us * 1e6);
  }
  return c;
}

}  // namespace moe::cuda
