// The CUDA devices this process can use.
//
//   if (!cuda::HasDevice()) GTEST_SKIP() << cuda::NoDeviceReason();
#pragma once

#include <string>

namespace moe::cuda {

// Number of usable devices; 0 when there is no driver or no GPU (never fails).
int DeviceCount();
inline bool HasDevice() { return DeviceCount() > 0; }
// Why no device is usable, e.g. "no CUDA device: cudaGetDeviceCount says CUDA driver
// version is insufficient"; empty when one is.
std::string NoDeviceReason();
// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" for device 0.
std::string DeviceDescription();

}  // namespace moe::cuda
