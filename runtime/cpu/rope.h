// Rotary position embedding (the "rotate half" form of Llama, Qwen, Mixtral and OLMoE).
//
// For each head vector x of size hd and position p, with half = hd / 2 and
// inv_freq[i] = theta^(-2i / hd):  out[i]        = x[i] cos(p f_i) - x[i+half] sin(p f_i)
//                                  out[i + half] = x[i+half] cos(p f_i) + x[i] sin(p f_i)
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moe::cpu {

// x [T, H, hd] f32, rotated in place; positions [T].
void ApplyRope(const std::vector<int32_t>& positions, double theta, Tensor& x);

}  // namespace moe::cpu
