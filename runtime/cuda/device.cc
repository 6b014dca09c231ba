#include "runtime/cuda/device.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

cudaError_t CountDevices(int* count) {
  *count = 0;
  const cudaError_t error = cudaGetDeviceCount(count);
  if (error != cudaSuccess) {
    *count = 0;
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
  }
  return error;
}

}  // namespace

absl::Status UseDevice(int device) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return absl::OkStatus();
}

int DeviceCount() {
  static const int count = [] {
    int n = 0;
    CountDevices(&n);
    return n;
  }();
  return count;
}

std::string NoDeviceReason() {
  int n = 0;
  const cudaError_t error = CountDevices(&n);
  if (error != cudaSuccess) {
    return absl::StrCat("no CUDA device: cudaGetDeviceCount says ", cudaGetErrorString(error));
  }
  return n == 0 ? "no CUDA device: cudaGetDeviceCount found none" : "";
}

std::string DeviceDescription() {
  if (!HasDevice()) return NoDeviceReason();
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "unknown CUDA device";
  return absl::StrFormat("%s, sm_%d%d, %d SMs, %.1f GiB", prop.name, prop.major, prop.minor,
                         prop.multiProcessorCount, prop.totalGlobalMem / double(1 << 30));
}

}  // namespace moe::cuda
