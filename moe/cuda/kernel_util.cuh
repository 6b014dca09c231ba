// Small device helpers shared by the MoE kernels: warp reductions and bf16 vector loads.
// Every warp reduction here uses the full mask, so all 32 lanes of the warp must call it.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

inline constexpr int kWarpSize = 32;

constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr size_t AlignUp(size_t bytes, size_t alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

// Sum over the 32 lanes, the same value on every lane (butterfly, fixed order).
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Max over the 32 lanes, the same value on every lane.
__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Eight bf16 values from one 16-byte load, widened to f32. `p` must be 16-byte aligned.
struct Bf16x8 {
  float v[8];
};
__device__ __forceinline__ Bf16x8 LoadBf16x8(const __nv_bfloat16* p) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  __nv_bfloat162 pairs[4];
  memcpy(pairs, &raw, sizeof(pairs));  // a copy, not a pointer pun
  Bf16x8 out;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(pairs[i]);
    out.v[2 * i] = f.x;
    out.v[2 * i + 1] = f.y;
  }
  return out;
}

__device__ __forceinline__ float Dot8(const Bf16x8& a, const Bf16x8& b, float acc) {
#pragma unroll
  for (int i = 0; i < 8; ++i) acc = fmaf(a.v[i], b.v[i], acc);
  return acc;
}

// SwiGLU's gate: silu(g) = g * sigmoid(g), written as the CPU reference writes it.
__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }

}  // namespace moe::cuda
