// Error checks for CUDA runtime calls and kernel launches.
//
//   CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));   // in functions returning absl::Status(Or)
//   CUDA_CHECK(cudaStreamSynchronize(stream));    // aborts with file and line: for bugs only
//   MyKernel<<<grid, block, 0, stream>>>(args);
//   CUDA_CHECK_LAUNCH();                          // a bad launch configuration is a bug
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace moe::cuda {

// "CUDA error at file:line: expr: <name> (<description>)".
absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line);
[[noreturn]] void CudaFatal(cudaError_t error, const char* expr, const char* file, int line);

// A kernel launch failed with `error`. Outside graph capture that is a bug (a bad
// configuration) and aborts with the file and line, like CUDA_CHECK_LAUNCH. While `stream`
// captures a graph the capture is lost instead: the first such error is kept for
// TakeCaptureLaunchError, and GraphCache::Capture returns it, so the step runs eagerly.
void LaunchFailed(cudaError_t error, cudaStream_t stream, const char* file, int line);
// The first launch error seen while capturing on this thread since the last call, as a
// Status (OK if none).
absl::Status TakeCaptureLaunchError();

}  // namespace moe::cuda

#define CUDA_RETURN_IF_ERROR(expr)                                              \
  do {                                                                          \
    const cudaError_t moe_cuda_error_ = (expr);                                 \
    if (moe_cuda_error_ != cudaSuccess) {                                       \
      return ::moe::cuda::CudaError(moe_cuda_error_, #expr, __FILE__, __LINE__); \
    }                                                                           \
  } while (0)

#define CUDA_CHECK(expr)                                                        \
  do {                                                                          \
    const cudaError_t moe_cuda_error_ = (expr);                                 \
    if (moe_cuda_error_ != cudaSuccess) {                                       \
      ::moe::cuda::CudaFatal(moe_cuda_error_, #expr, __FILE__, __LINE__);       \
    }                                                                           \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
