// Internal to moe/cuda/experts*.cu: the RunExperts workspace as the kernels see it, the
// device-built schedule, and the two paths' launchers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
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

// Slots of ExpertsWorkspace::counters.
inline constexpr int kNumTiles = 0;
inline constexpr int kNumActive = 1;

struct ExpertsWorkspace {
  __nv_bfloat16* h;    // [N, I] bf16: silu(gate) * up
  ExpertTile* tiles;   // [max_tiles] in expert order, then row order
  int32_t* active;     // [max_active] experts with at least one row, ascending
  int32_t* counters;   // [2] tiles and active experts actually written
  int32_t max_tiles;   // ceil(N / kTileRows) + E, a bound on sum_e ceil(n_e / tile_rows)
  int32_t tile_rows;   // rows per tile of this run's prefill path
  int32_t max_active;  // min(N, E)
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

// Each reads ws.counters and ws.tiles / ws.active, which the schedule kernel wrote earlier
// on the same stream; grids are sized from the bounds in `ws`.
void LaunchDecodeExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws, cudaStream_t stream);
void LaunchPrefillExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws, cudaStream_t stream);
void LaunchPrefillWgmmaExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws,
                               cudaStream_t stream);

}  // namespace moe::cuda::experts_internal
