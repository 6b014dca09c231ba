// Kernels with planted faults (planted_kernels.h).
#include "planted_kernels.h"

#include "runtime/cuda/launch.cuh"

namespace emu_checks {
namespace {

__global__ void __launch_bounds__(kBounded) BoundedKernel(float* out) {
  moe::cuda::AwaitPrecedingKernels();
  out[threadIdx.x] = 1.0f;
}

__global__ void StaticAndDynamicKernel(float* out) {
  moe::cuda::AwaitPrecedingKernels();
  extern __shared__ float rows[];
  __shared__ float scratch[1024];
  scratch[threadIdx.x] = 1.0f;
  rows[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = scratch[threadIdx.x] + rows[threadIdx.x];
}

// Under PDL the kernel before may still be writing `in` until the await returns.
__global__ void EarlyReadKernel(const float* in, float* out) {
  const float v = in[threadIdx.x];
  moe::cuda::AwaitPrecedingKernels();
  out[threadIdx.x] = v;
}

__global__ void AwaitFirstKernel(const float* in, float* out) {
  moe::cuda::AwaitPrecedingKernels();
  out[threadIdx.x] = in[threadIdx.x];
}

}  // namespace

int TakeEmulationErrors(cudaStream_t stream) {
  cudaStreamSynchronize(stream);
  const int n = ::emu::ErrorCount();
  ::emu::ResetErrorCount();
  return n;
}

void LaunchBounded(int threads, float* out, cudaStream_t stream) {
  moe::cuda::Launch(BoundedKernel, 1, threads, 0, stream, out);
}

void LaunchStaticAndDynamic(size_t dynamic_bytes, float* out, cudaStream_t stream) {
  moe::cuda::Launch(StaticAndDynamicKernel, 1, 256, dynamic_bytes, stream, out);
}

cudaError_t OptInDynamicShared(int bytes) {
  return cudaFuncSetAttribute(StaticAndDynamicKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

void LaunchCopy(bool read_before_await, const float* in, float* out, cudaStream_t stream) {
  moe::cuda::Launch(read_before_await ? EarlyReadKernel : AwaitFirstKernel, 1, 64, 0, stream, in, out);
}

}  // namespace emu_checks
