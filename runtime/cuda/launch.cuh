// Kernel launches with programmatic dependent launch (PDL, Hopper and later).
//
// A decode step is hundreds of small dependent kernels, and each boundary costs a launch:
// the next kernel is only scheduled once the previous one has drained. Launched with PDL,
// the next kernel's blocks are scheduled while the previous kernel finishes, and each
// waits on the device for what it depends on. Every kernel started by Launch keeps one rule:
//
//   __global__ void MyKernel(const MyArgs args) {
//     AwaitPrecedingKernels();  // first statement, on every thread, before any early return
//     ...
//   }
//   Launch(MyKernel, grid, block, shared_bytes, stream, args);
//
// AwaitPrecedingKernels returns once the kernels before this one on the stream have
// finished and their writes are visible (so anything they write or read is safe to touch),
// then lets the next kernel begin launching (it waits in turn). Kernels launched otherwise
// (cuBLAS) keep full stream order on both sides. Without PDL (before Hopper, or MOE_PDL=0
// in the environment) Launch is a plain launch and the wait returns at once.
#pragma once

#include <cstddef>
#include <utility>

#include <cuda_runtime.h>

#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {

__device__ __forceinline__ void AwaitPrecedingKernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// True when the current device runs PDL (compute capability 9.0 or later) and MOE_PDL is
// not "0". Decided once, at the first call.
bool ProgrammaticLaunchEnabled();

// kernel<<<grid, block, shared_bytes, stream>>>(args...) with PDL when enabled; a failed
// launch goes to LaunchFailed.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = ProgrammaticLaunchEnabled() ? 1 : 0;
  if (const cudaError_t error = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...); error != cudaSuccess) {
    LaunchFailed(error, stream, __FILE__, __LINE__);
  }
}

}  // namespace moe::cuda
