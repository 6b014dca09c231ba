// Kernels with planted faults for emu_checks_test.cc, and their launchers. Compiled as
// device code over the emulator (gen.py); the test itself is host code.
#pragma once

#include <cuda_runtime.h>

namespace emu_checks {

inline constexpr int kBounded = 64;  // BoundedKernel's __launch_bounds__

// Emulation errors reported since the last call (after synchronizing `stream`).
int TakeEmulationErrors(cudaStream_t stream);

// A kernel declared for kBounded threads, launched with `threads`.
void LaunchBounded(int threads, float* out, cudaStream_t stream);
// 4 KiB of static shared memory plus `dynamic_bytes` of dynamic.
void LaunchStaticAndDynamic(size_t dynamic_bytes, float* out, cudaStream_t stream);
// Opts StaticAndDynamic in to `bytes` of dynamic shared memory.
cudaError_t OptInDynamicShared(int bytes);
// 64 threads copy `in` to `out`: reading before the PDL await, or after it.
void LaunchCopy(bool read_before_await, const float* in, float* out, cudaStream_t stream);

}  // namespace emu_checks
