// Linear layers on the CPU: y = x @ w^T, the one GEMM the forward pass needs.
//
// Weights are row-major [N, K] (PyTorch's nn.Linear layout) in f32 or bf16, used in place;
// activations and outputs are f32, and every sum is in f32. Each output element is one dot
// product whose summation order depends on neither the number of rows nor their order, so a
// token's result is the same alone or in any batch.
//
// Where the CPU has AVX-512 BF16 the products run there, chosen at run time; elsewhere a
// portable loop does. Either way the result is fixed for a machine, never for a batch.
#pragma once

#include <span>

#include "runtime/tensor.h"

namespace moe::cpu {

// What a bf16 weight multiplies.
enum class GemmInputs {
  kF32,   // the f32 activations as they are (the reference: matches f32 PyTorch to 1e-4)
  kBF16,  // activations rounded to bf16 first, as a bf16 checkpoint runs in PyTorch or
          // llama.cpp: pairs of bf16 products summed in f32, twice the arithmetic rate
};

// x [T, K] f32, w [N, K] f32|bf16 -> y [T, N] f32 (y is written, not accumulated). With f32
// weights `inputs` does not matter: f32 weights always meet f32 activations.
void Linear(const Tensor& x, const Tensor& w, Tensor& y, GemmInputs inputs = GemmInputs::kF32);

// One product of a group: y [T, N] = x [T, K] @ w [N, K]^T, as above.
struct LinearProduct {
  const Tensor& x;
  const Tensor& w;
  Tensor& y;
};

// Independent products at once (the experts of a layer), their rows of w spread over all
// cores together: a few experts at decode keep every core busy, with one wake-up of the team
// instead of one per product. Each result is what Linear gives it alone.
void Linear(std::span<const LinearProduct> products, GemmInputs inputs = GemmInputs::kF32);

// y [T, N] += bias [N] f32.
void AddBias(const Tensor& bias, Tensor& y);

}  // namespace moe::cpu
