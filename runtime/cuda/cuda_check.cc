#include "runtime/cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moe::cuda {

absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error, so the next launch check does not see it
  return absl::InternalError(absl::StrCat("CUDA error at ", file, ":", line, ": ", expr, ": ",
                                          cudaGetErrorName(error), " (", cudaGetErrorString(error),
                                          ")"));
}

void CudaFatal(cudaError_t error, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s\n", CudaError(error, expr, file, line).ToString().c_str());
  std::abort();
}

namespace {

thread_local absl::Status capture_launch_error;

}  // namespace

void LaunchFailed(cudaError_t error, cudaStream_t stream, const char* file, int line) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture == cudaStreamCaptureStatusNone) {
    CudaFatal(error, "cudaLaunchKernelEx", file, line);
  }
  cudaGetLastError();  // the capture's failure is reported by Capture, not by a later check
  if (capture_launch_error.ok()) {
    capture_launch_error = absl::InternalError(
        absl::StrCat("a kernel launch failed while capturing (", file, ":", line, "): ", cudaGetErrorString(error)));
  }
}

absl::Status TakeCaptureLaunchError() { return std::exchange(capture_launch_error, absl::OkStatus()); }

}  // namespace moe::cuda
