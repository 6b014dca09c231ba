// Dispatch and Combine: moving token rows to their experts and back.
//
// Legend: T tokens, D hidden, E experts, K experts per token, N = T*K dispatched rows.
//
//   plan = Dispatch(topk_ids, E)             rows grouped by expert, stable in (t, k) order
//   xs   = Gather(x, plan)                   [N, D]
//   ...  experts turn xs into ys             [N, D]
//   out  = Combine(ys, plan, topk_weights)   [T, D], summed in fixed k order: deterministic
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/tensor.h"

namespace moe {

struct DispatchPlan {
  std::vector<int32_t> expert_offsets;  // [E+1] expert e owns rows [offsets[e], offsets[e+1])
  std::vector<int32_t> source_token;    // [N] token each dispatched row comes from
  std::vector<int32_t> row_of;          // [N] dispatched row of choice (t, k), at t*K + k
};

// topk_ids [T, K] i32.
DispatchPlan Dispatch(const Tensor& topk_ids, int num_experts);

// x [T, D] f32 -> xs [N, D] f32.
void Gather(const Tensor& x, const DispatchPlan& plan, Tensor& xs);

// ys [N, D] f32, topk_weights [T, K] f32 -> out [T, D] f32 (written, not accumulated).
void Combine(const Tensor& ys, const DispatchPlan& plan, const Tensor& topk_weights, Tensor& out);

}  // namespace moe
