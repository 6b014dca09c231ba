#include "runtime/cuda/elementwise.h"

#include <algorithm>

#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

constexpr int kThreads = 256;

int Blocks(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// Grid: x over tokens (rows), y over blocks of columns.
__global__ void EmbedKernel(EmbedArgs a) {
  AwaitPrecedingKernels();
  const int64_t t = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= a.hidden) return;
  const int64_t id = a.token_ids[t];
  a.out[t * a.hidden + c] = __bfloat162float(a.table[id * a.hidden + c]);
}

__global__ void SiluMulKernel(SiluMulArgs a) {
  AwaitPrecedingKernels();
  const int64_t t = blockIdx.x;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (i >= a.intermediate) return;
  const __nv_bfloat16* row = a.gate_up + t * 2 * a.intermediate;
  const float g = __bfloat162float(row[i]);
  const float u = __bfloat162float(row[a.intermediate + i]);
  a.out[t * a.intermediate + i] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
}

template <typename T>
__global__ void GatherRowsKernel(GatherRowsOf<T> a) {
  AwaitPrecedingKernels();
  const int64_t r = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= a.hidden) return;
  a.out[r * a.hidden + c] = a.x[static_cast<int64_t>(a.rows[r]) * a.hidden + c];
}

__global__ void AddGatedKernel(AddGatedArgs a) {
  AwaitPrecedingKernels();
  const int64_t t = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= a.hidden) return;
  const float scale = a.gate != nullptr ? 1.0f / (1.0f + expf(-a.gate[t])) : 1.0f;
  a.out[t * a.hidden + c] += scale * a.y[t * a.hidden + c];
}

// splitmix64: a well-mixed 64-bit hash, so neighbouring indices give unrelated values.
__device__ __forceinline__ uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void FillUniformKernel(FillUniformArgs a) {
  AwaitPrecedingKernels();
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < a.count; i += stride) {
    const float u = static_cast<float>(Mix(a.seed ^ Mix(i)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
    const float x = a.offset + a.scale * u;
    if (a.bf16) {
      static_cast<__nv_bfloat16*>(a.data)[i] = __float2bfloat16(x);
    } else {
      static_cast<float*>(a.data)[i] = x;
    }
  }
}

}  // namespace

void FillUniform(const FillUniformArgs& args, cudaStream_t stream) {
  CHECK(args.count >= 0 && (args.data != nullptr || args.count == 0));
  if (args.count == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(Blocks(args.count), 65536));
  Launch(FillUniformKernel, blocks, kThreads, 0, stream, args);
}

void Embed(const EmbedArgs& args, cudaStream_t stream) {
  CHECK(args.tokens >= 0 && args.hidden > 0);
  if (args.tokens == 0) return;
  Launch(EmbedKernel, dim3(args.tokens, Blocks(args.hidden)), kThreads, 0, stream, args);
}

void SiluMul(const SiluMulArgs& args, cudaStream_t stream) {
  CHECK(args.tokens >= 0 && args.intermediate > 0);
  if (args.tokens == 0) return;
  Launch(SiluMulKernel, dim3(args.tokens, Blocks(args.intermediate)), kThreads, 0, stream, args);
}

namespace {

template <typename T>
void GatherRowsOfType(const GatherRowsOf<T>& args, cudaStream_t stream) {
  CHECK(args.num_rows >= 0 && args.hidden > 0);
  if (args.num_rows == 0) return;
  Launch(GatherRowsKernel<T>, dim3(args.num_rows, Blocks(args.hidden)), kThreads, 0, stream, args);
}

}  // namespace

void GatherRows(const GatherRowsOf<float>& args, cudaStream_t stream) { GatherRowsOfType(args, stream); }
void GatherRows(const GatherRowsOf<__nv_bfloat16>& args, cudaStream_t stream) { GatherRowsOfType(args, stream); }

void AddGated(const AddGatedArgs& args, cudaStream_t stream) {
  CHECK(args.tokens >= 0 && args.hidden > 0);
  if (args.tokens == 0) return;
  Launch(AddGatedKernel, dim3(args.tokens, Blocks(args.hidden)), kThreads, 0, stream, args);
}

}  // namespace moe::cuda
