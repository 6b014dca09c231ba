// Linear layers on the CPU: y = x @ w^T, the one GEMM the forward pass needs.
//
// Weights are row-major [N, K] (PyTorch's nn.Linear layout) in f32 or bf16; activations and
// outputs are f32. Each output element is one dot product whose summation order does not
// depend on the number of rows, so a token's result is the same in any batch.
#pragma once

#include "runtime/tensor.h"

namespace moe::cpu {

// x [T, K] f32, w [N, K] f32|bf16 -> y [T, N] f32 (y is written, not accumulated).
void Linear(const Tensor& x, const Tensor& w, Tensor& y);

// y [T, N] += bias [N] f32.
void AddBias(const Tensor& bias, Tensor& y);

}  // namespace moe::cpu
