// Element-wise and gather ops on the CPU, all f32.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moe::cpu {

// out [T, D] f32 = table[ids[t]]; table [V, D] f32|bf16.
void Embed(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);

// out [R, D] = x[rows[r]]  (x [T, D] f32).
void GatherRows(const Tensor& x, const std::vector<int32_t>& rows, Tensor& out);

// y += x, same shape.
void AddInPlace(const Tensor& x, Tensor& y);

// gate_up [T, 2I] (gate in [0, I), up in [I, 2I)) -> out [T, I] = silu(gate) * up.
void SiluMul(const Tensor& gate_up, Tensor& out);

// Clamps every element of x to [-limit, limit] (OLMoE's clip_qkv).
void Clamp(float limit, Tensor& x);

}  // namespace moe::cpu
