// RunExperts on the GPU: the grouped expert GEMMs, reading the dispatch plan on the
// device (no host synchronization). The CPU reference is moe/experts.h.
//
// Legend: T tokens, N dispatched rows, D hidden, E experts, I expert width.
//
//   for each expert e, rows r in [offsets[e], offsets[e+1]):
//     h[r]  = silu(x[source_token[r]] @ gate[e]^T) * (x[source_token[r]] @ up[e]^T)  [n_e, I]
//     ys[r] = h[r] @ down[e]^T                                                       [n_e, D]
//
// Two paths, picked on the host from T alone: decode (few rows per expert; weight
// streaming, small M tiles) and prefill (tensor-core tiles). bf16 in, fp32 accumulation.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

struct ExpertsArgs {
  const __nv_bfloat16* x;          // [T, D] token rows (gathered through source_token)
  const int32_t* expert_offsets;   // [E+1] from Dispatch
  const int32_t* source_token;     // [N] from Dispatch
  const __nv_bfloat16* gate_up;    // [E, 2I, D]: rows [0, I) gate, [I, 2I) up
  const __nv_bfloat16* down;       // [E, D, I]
  float* ys;                       // [N, D] f32, written
  int32_t num_tokens = 0;          // T
  int32_t num_rows = 0;            // N = T*K
  int32_t num_experts = 0;         // E
  int32_t hidden = 0;              // D
  int32_t intermediate = 0;        // I
};

// Scratch bytes RunExperts needs for up to `max_rows` dispatched rows.
size_t ExpertsWorkspaceBytes(int32_t max_rows, int32_t num_experts, int32_t intermediate);
void RunExperts(const ExpertsArgs& args, void* workspace, cudaStream_t stream);

}  // namespace moe::cuda
