// RMSNorm on the CPU: out = x / sqrt(mean(x^2) + eps) * weight, per row, in f32.
//
// Rows have weight.numel() elements, so the same op normalizes whole hidden states
// (x [T, D], weight [D]) or each head (x viewed as [T*H, hd], weight [hd]).
#pragma once

#include "runtime/tensor.h"

namespace moe::cpu {

// x [R, C] f32, weight [C] f32 -> out [R, C] f32 (out may alias x).
void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

}  // namespace moe::cpu
