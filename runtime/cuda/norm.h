// RMSNorm on the GPU, with the residual add fused in front. The CPU reference is
// runtime/cpu/norm.h (and AddInPlace in runtime/cpu/elementwise.h).
//
//   residual += delta                      (if delta is given)
//   out = residual / sqrt(mean(residual^2) + eps) * weight     fp32 math, bf16 out
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

struct AddRmsNormArgs {
  float* residual;              // [R, C] f32, updated in place when delta is given
  const float* delta;           // [R, C] f32, or null for a plain RMSNorm
  const float* weight;          // [C] f32
  __nv_bfloat16* out;           // [R, C] bf16
  int32_t rows = 0;             // R
  int32_t cols = 0;             // C
  float eps = 1e-6f;
};

void AddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
