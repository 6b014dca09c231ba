// RunExperts on the GPU: the grouped expert GEMMs, reading the dispatch plan on the
// device (no host synchronization). The CPU reference is moe/experts.h.
//
// Legend: T tokens, N dispatched rows, D hidden, E experts, I expert width.
//
//   for each expert e, rows r in [offsets[e], offsets[e+1]):
//     h[r]  = silu(x[source_token[r]] @ gate[e]^T) * (x[source_token[r]] @ up[e]^T)  [n_e, I]
//     ys[r] = h[r] @ down[e]^T                                                       [n_e, D]
//
// bf16 in, fp32 accumulation; h is rounded to bf16 (in the workspace) before the down
// projection, so ys differs from the all-f32 CPU reference by about 2^-9 relative per term.
// x rows are gathered through source_token inside the GEMM (no gathered copy of x).
//
// Three paths, picked on the host from N and E alone (ChooseExpertsPath), never from the
// plan's contents, so the launch shapes need no device-to-host read:
//   decode:        weight streaming; a block owns (active expert, 8 output columns), a warp
//                  one column, reading each weight row once with 16-byte loads against the
//                  expert's rows, 8 rows at a time. Best when experts hold a few rows each.
//                  Two launches: each block finds its expert in the offsets itself.
//   prefill WMMA:  tensor-core (WMMA bf16, f32 accumulate) grouped GEMM over 64-row tiles
//                  of each expert's rows, tile list built on the device by one more launch.
//   prefill wgmma: the same on Hopper's warpgroup MMA over 128-row tiles, 4-stage cp.async
//                  pipeline into 128-byte swizzled tiles (experts_prefill_wgmma.cu).
// All give the same result up to f32 summation order.
//
// Requirements (checked): D and I multiples of 8; x, gate_up, down, ys and the workspace
// 16-byte aligned; 1 <= E <= 1024. Rows past offsets[E] (dropped ids) are not written.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

enum class ExpertsPath { kAuto, kDecode, kPrefillWmma, kPrefillWgmma };

struct ExpertsArgs {
  const __nv_bfloat16* x;                 // [T, D] token rows (gathered through source_token)
  const int32_t* expert_offsets;          // [E+1] from Dispatch
  const int32_t* source_token;            // [N] from Dispatch
  const __nv_bfloat16* gate_up;           // [E, 2I, D]: rows [0, I) gate, [I, 2I) up
  const __nv_bfloat16* down;              // [E, D, I]
  float* ys;                              // [N, D] f32, written
  int32_t num_tokens = 0;                 // T
  int32_t num_rows = 0;                   // N = T*K
  int32_t num_experts = 0;                // E
  int32_t hidden = 0;                     // D
  int32_t intermediate = 0;               // I
  ExpertsPath path = ExpertsPath::kAuto;  // kAuto: ChooseExpertsPath; tests force one
  ExpertsPath auto_prefill = ExpertsPath::kPrefillWmma;  // the prefill path kAuto picks
};

// What kAuto runs: decode when N <= 64 or N <= 4*E (few rows per expert), else
// `prefill` (WMMA by default: the wgmma path is not the default until it has been checked
// on a GPU).
ExpertsPath ChooseExpertsPath(int32_t num_rows, int32_t num_experts,
                              ExpertsPath prefill = ExpertsPath::kPrefillWmma);

// Scratch bytes RunExperts needs for up to `max_rows` dispatched rows:
//   h [N, I] bf16 + tile list [ceil(N/64) + E] x (expert, first row) int32 (a bound for
//   tiles of 64 rows or more) + the tile count, each part rounded up to 256 bytes.
size_t ExpertsWorkspaceBytes(int32_t max_rows, int32_t num_experts, int32_t intermediate);
// `workspace` holds at least ExpertsWorkspaceBytes(args.num_rows, E, I) bytes.
void RunExperts(const ExpertsArgs& args, void* workspace, cudaStream_t stream);

}  // namespace moe::cuda
