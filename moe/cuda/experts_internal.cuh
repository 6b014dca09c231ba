// Internal to moe/cuda/experts*.cu: the RunExperts workspace as the kernels see it, the
// device-built schedule, and the two paths' launchers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>

#include "moe/cuda/experts.h"

namespace moe::cuda::experts_internal {

inline constexpr int kTileRows = 64;        // rows per WMMA prefill tile (its BM)
inline constexpr int kWgmmaTileRows = 128;  // rows per wgmma prefill tile (its BM)
inline constexpr int kMaxExperts = 1024;  // the schedule kernel's shared arrays

// One prefill tile: rows [row_begin, min(row_begin + tile rows, end of expert's rows)).
struct ExpertTile {
  int32_t expert;
  int32_t row_begin;
};

struct ExpertsWorkspace {
  __nv_bfloat16* h;    // [N, I] bf16: silu(gate) * up
  ExpertTile* tiles;   // [max_tiles] in expert order, then row order (prefill paths)
  int32_t* num_tiles;  // [1] tiles actually written (prefill paths)
  int32_t max_tiles;   // ceil(N / kTileRows) + E, a bound on sum_e ceil(n_e / tile_rows)
  int32_t tile_rows;   // rows per tile of this run's prefill path
};

// Rows [begin, end) of expert e, clamped to [0, N] so a bad plan cannot send a kernel
// out of bounds.
struct RowRange {
  int32_t begin;
  int32_t end;
};
__device__ __forceinline__ RowRange ExpertRows(const int32_t* offsets, int32_t e, int32_t N) {
  const int32_t begin = min(max(offsets[e], 0), N);
  const int32_t end = min(max(offsets[e + 1], begin), N);
  return {begin, end};
}

// The A (activation) row of the prefill GEMMs for dispatched row r: the x row gathered
// through source_token for gate/up, the h row for down; null past the tile's rows or for a
// token id outside [0, T).
template <bool kGateUp>
__device__ __forceinline__ const __nv_bfloat16* ActivationRow(const ExpertsArgs& a,
                                                              const ExpertsWorkspace& ws, int32_t r,
                                                              int32_t row_end) {
  if (r >= row_end) return nullptr;
  if constexpr (kGateUp) {
    const int32_t token = a.source_token[r];
    if (token < 0 || token >= a.num_tokens) return nullptr;
    return a.x + static_cast<int64_t>(token) * a.hidden;  // [D]
  } else {
    return ws.h + static_cast<int64_t>(r) * a.intermediate;  // [I]
  }
}

// Copies 8 bf16 (row[k..k+8)) to shared memory with cp.async (the caller commits and
// waits), or stores zeros when the chunk is outside: k and depth are multiples of 8, so a
// chunk is wholly inside or wholly outside.
__device__ __forceinline__ void CopyChunk(void* dst, const __nv_bfloat16* row, int64_t k,
                                          int64_t depth) {
  if (row != nullptr && k < depth) {
    __pipeline_memcpy_async(dst, row + k, 16);
  } else {
    *static_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
}

// The prefill launchers read ws.num_tiles and ws.tiles, which the schedule kernel wrote
// earlier on the same stream, with grids sized from ws.max_tiles. The decode launcher
// needs no schedule: each block finds its expert in the offsets.
void LaunchDecodeExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws, cudaStream_t stream);
void LaunchPrefillExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws, cudaStream_t stream);
void LaunchPrefillWgmmaExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws,
                               cudaStream_t stream);

}  // namespace moe::cuda::experts_internal
