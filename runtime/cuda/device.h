// The CUDA devices this process can use.
//
//   if (!cuda::HasDevice()) GTEST_SKIP() << cuda::NoDeviceReason();
#pragma once

#include <string>

#include "absl/status/status.h"

namespace moe::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never fails).
int DeviceCount();
// Makes `device` this thread's current device (and so the one this process allocates on).
absl::Status UseDevice(int device);
inline bool HasDevice() { return DeviceCount() > 0; }
// Why no device is usable, e.g. "no CUDA device: cudaGetDeviceCount says CUDA driver
// version is insufficient"; empty when one is.
std::string NoDeviceReason();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" for device 0.
std::string DeviceDescription();

}  // namespace moe::cuda
