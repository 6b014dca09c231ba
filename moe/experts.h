// RunExperts: the grouped expert GEMMs on the CPU, the reference for the CUDA kernels.
//
// Legend: N dispatched rows, D hidden, E experts, I expert width.
//
//   for each expert e, rows r in [offsets[e], offsets[e+1]):
//     h  = SiluMul(xs[r] @ gate_up[e]^T)   [n_e, I]
//     ys[r] = h @ down[e]^T                [n_e, D]
#pragma once

#include <cstdint>
#include <vector>

#include "moe/weights.h"
#include "runtime/cpu/linear.h"
#include "runtime/tensor.h"

namespace moe {

// xs [N, D] f32 grouped by expert as `expert_offsets` [E+1] says -> ys [N, D] f32.
void RunExperts(const ExpertWeights& experts, cpu::GemmInputs inputs, const Tensor& xs,
                const std::vector<int32_t>& expert_offsets, Tensor& ys);

}  // namespace moe
