// Dispatch and Combine on the GPU, with no host synchronization: per-expert counts,
// offsets and the permutation are computed on the device. The CPU reference is
// moe/dispatch.h, and the plan is the same one: rows grouped by expert, stable in (t, k)
// order, so tests compare plans exactly. Both are deterministic (no float atomics, no
// order that depends on scheduling).
//
// Legend: T tokens, D hidden, E experts, K experts per token, N = T*K dispatched rows.
//
//   plan = Dispatch(topk_ids)                 expert_offsets [E+1], source_token [N], row_of [N]
//   ...  experts turn rows into ys            [N, D]
//   out  = Combine(ys, plan, topk_weights)    [T, D] f32, summed in fixed k order
//
// Expert ids must lie in [0, E). The kernels cannot report a bad one, so they drop it
// instead of writing out of bounds: it is counted for no expert and its row_of is -1,
// which Combine skips; expert_offsets[E] is then less than N.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

inline constexpr int32_t kDispatchMaxExperts = 1024;

struct DeviceDispatchPlan {
  int32_t* expert_offsets;  // [E+1] expert e owns rows [offsets[e], offsets[e+1])
  int32_t* source_token;    // [N] token each dispatched row comes from
  int32_t* row_of;          // [N] dispatched row of choice (t, k), at t*K + k
};

struct DispatchArgs {
  const int32_t* topk_ids;  // [T, K]
  DeviceDispatchPlan plan;  // written
  int32_t num_tokens = 0;   // T
  int32_t top_k = 0;        // K
  int32_t num_experts = 0;  // E <= kDispatchMaxExperts
};

// Scratch bytes Dispatch needs for up to `max_tokens` tokens. The current scheme needs
// none (it returns 0, and `workspace` may be null); callers size it with this anyway.
size_t DispatchWorkspaceBytes(int32_t max_tokens, int32_t top_k, int32_t num_experts);
// Two launches: one block counts and scans (expert_offsets), then one block per expert
// places that expert's rows in flat (t*K + k) order.
void Dispatch(const DispatchArgs& args, void* workspace, cudaStream_t stream);

struct CombineArgs {
  const float* ys;            // [N, D] expert outputs, unweighted
  const int32_t* row_of;      // [N] at t*K + k
  const float* topk_weights;  // [T, K]
  float* out;                 // [T, D] written, not accumulated
  int32_t num_tokens = 0;     // T
  int32_t top_k = 0;          // K
  int32_t hidden = 0;         // D
};

// out[t] = sum over k = 0..K-1, in that order, of topk_weights[t, k] * ys[row_of[t*K + k]]
// (each step one fmaf in f32); a row_of outside [0, N) contributes nothing.
void Combine(const CombineArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
