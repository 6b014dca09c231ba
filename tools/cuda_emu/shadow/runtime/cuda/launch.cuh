// Emulator stand-in for runtime/cuda/launch.cuh: Launch checks the configuration as the GPU
// does when the launch is made (a refused one goes to LaunchFailed, as the real Launch's
// does, and invalidates a capture), then enqueues an emulated launch on the stream
// (emu_rt.cc: run at once, deferred, or recorded into a graph) that checks every thread of
// the kernel called AwaitPrecedingKernels (the PDL rule).
#pragma once
#include <cstdio>
#include <functional>
#include <tuple>
#include "runtime/cuda/cuda_check.h"

namespace emu {
void EnqueueKernel(cudaStream_t stream, const char* what, std::function<void()> run);
void InvalidateCapture(cudaStream_t stream);
void SetPdlLaunch(bool pdl);
// Counts AwaitPrecedingKernels calls (in emu.cc, which the race build does not instrument).
void NoteAwait();
long long TakeAwaits();
}

namespace moe::cuda {

inline void AwaitPrecedingKernels() { ::emu::NoteAwait(); }
bool ProgrammaticLaunchEnabled();

template <typename... Params, typename... Args>
void LaunchAt(const char* file, int line, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
              cudaStream_t stream, Args&&... args) {
  (void)ProgrammaticLaunchEnabled();
  const cudaError_t refused =
      ::emu::LaunchConfigError(grid, block, shared_bytes, reinterpret_cast<const void*>(kernel));
  if (refused != cudaSuccess) {
    ::emu::InvalidateCapture(stream);
    LaunchFailed(refused, stream, file, line);
    return;
  }
  auto run = [=, tup = std::make_tuple(static_cast<std::decay_t<Params>>(args)...)] {
    ::emu::TakeAwaits();
    ::emu::SetPdlLaunch(true);
    std::apply([&](const auto&... a) { ::emu::Launcher(grid, block, shared_bytes, stream, file, line)(kernel, a...); },
               tup);
    ::emu::SetPdlLaunch(false);
    const long long threads = 1LL * grid.x * grid.y * grid.z * block.x * block.y * block.z;
    if (const long long awaits = ::emu::TakeAwaits(); awaits != threads) {
      ::emu::Error("%s:%d: %lld of %lld threads called AwaitPrecedingKernels", file, line, awaits, threads);
    }
  };
  ::emu::EnqueueKernel(stream, file, run);
}

}  // namespace moe::cuda

#define Launch(...) LaunchAt(__FILE__, __LINE__, __VA_ARGS__)
