// RunExperts on the GPU: checks, the workspace layout, the device-built schedule and the
// choice between the decode (experts_decode.cu) and prefill (experts_prefill.cu, and
// experts_prefill_wgmma.cu on Hopper's warpgroup MMA) paths.
#include "moe/cuda/experts.h"

#include <algorithm>
#include <cstdint>

#include "moe/cuda/experts_internal.cuh"
#include "moe/cuda/kernel_util.cuh"
#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

using experts_internal::ExpertRows;
using experts_internal::ExpertsWorkspace;
using experts_internal::ExpertTile;
using experts_internal::kMaxExperts;
using experts_internal::kTileRows;

constexpr size_t kWorkspaceAlignment = 256;
constexpr int kScheduleThreads = 256;
constexpr int32_t kDecodeMaxRows = 64;
constexpr int32_t kDecodeMaxRowsPerExpert = 4;

// Byte offsets of the workspace parts for N rows; every part grows with N, so a
// workspace sized for max_rows fits any N <= max_rows.
struct WorkspaceLayout {
  size_t h = 0, tiles = 0, num_tiles = 0, total = 0;
  int32_t max_tiles = 0;
};

WorkspaceLayout Layout(int32_t num_rows, int32_t num_experts, int32_t intermediate) {
  WorkspaceLayout l;
  const int64_t max_tiles = CeilDiv(num_rows, kTileRows) + num_experts;
  l.max_tiles = static_cast<int32_t>(max_tiles);
  const size_t h_bytes = static_cast<size_t>(num_rows) * intermediate * sizeof(__nv_bfloat16);
  l.tiles = l.h + AlignUp(h_bytes, kWorkspaceAlignment);
  l.num_tiles = l.tiles + AlignUp(max_tiles * sizeof(ExpertTile), kWorkspaceAlignment);
  l.total = l.num_tiles + AlignUp(sizeof(int32_t), kWorkspaceAlignment);
  return l;
}

// Builds the prefill tile list from expert_offsets. Thread 0 scans the per-expert tile
// counts serially (E <= 1024); the other passes are one expert per thread.
__global__ void __launch_bounds__(kScheduleThreads)
    ScheduleKernel(const int32_t* expert_offsets, int32_t num_experts, int32_t num_rows,
                   const ExpertsWorkspace ws) {
  AwaitPrecedingKernels();
  __shared__ int32_t first_tile[kMaxExperts];  // [E] tiles of e, then their exclusive scan
  for (int32_t e = threadIdx.x; e < num_experts; e += blockDim.x) {
    const auto rows = ExpertRows(expert_offsets, e, num_rows);
    first_tile[e] = static_cast<int32_t>(CeilDiv(rows.end - rows.begin, ws.tile_rows));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t tiles = 0;
    for (int32_t e = 0; e < num_experts; ++e) {
      const int32_t e_tiles = first_tile[e];
      first_tile[e] = tiles;
      tiles += e_tiles;
    }
    *ws.num_tiles = min(tiles, ws.max_tiles);
  }
  __syncthreads();
  for (int32_t e = threadIdx.x; e < num_experts; e += blockDim.x) {
    const auto rows = ExpertRows(expert_offsets, e, num_rows);
    int32_t tile = first_tile[e];
    for (int32_t r = rows.begin; r < rows.end && tile < ws.max_tiles; r += ws.tile_rows, ++tile) {
      ws.tiles[tile] = ExpertTile{e, r};
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void CheckArgs(const ExpertsArgs& a) {
  CHECK(a.num_tokens >= 0 && a.num_rows >= 0)
      << "num_tokens " << a.num_tokens << ", num_rows " << a.num_rows;
  CHECK(a.num_experts >= 1 && a.num_experts <= kMaxExperts)
      << "RunExperts supports 1.." << kMaxExperts << " experts, got " << a.num_experts;
  CHECK(a.hidden >= 8 && a.hidden % 8 == 0)
      << "hidden size " << a.hidden << ": expected a positive multiple of 8 (16-byte rows)";
  CHECK(a.intermediate >= 8 && a.intermediate % 8 == 0)
      << "expert width " << a.intermediate << ": expected a positive multiple of 8";
  CHECK(a.x != nullptr && a.expert_offsets != nullptr && a.source_token != nullptr &&
        a.gate_up != nullptr && a.down != nullptr && a.ys != nullptr);
  CHECK(Aligned16(a.x) && Aligned16(a.gate_up) && Aligned16(a.down) && Aligned16(a.ys))
      << "x, gate_up, down and ys must be 16-byte aligned";
  CHECK(CeilDiv(a.num_rows, kTileRows) + a.num_experts <= 65535)
      << a.num_rows << " rows need more prefill tiles than a grid's y dimension holds";
}

}  // namespace

ExpertsPath ChooseExpertsPath(int32_t num_rows, int32_t num_experts, ExpertsPath prefill) {
  const bool few_rows = num_rows <= kDecodeMaxRows ||
                        num_rows <= kDecodeMaxRowsPerExpert * static_cast<int64_t>(num_experts);
  return few_rows ? ExpertsPath::kDecode : prefill;
}

size_t ExpertsWorkspaceBytes(int32_t max_rows, int32_t num_experts, int32_t intermediate) {
  return Layout(max_rows, num_experts, intermediate).total;
}

void RunExperts(const ExpertsArgs& args, void* workspace, cudaStream_t stream) {
  CheckArgs(args);
  if (args.num_rows == 0) return;
  CHECK(workspace != nullptr && Aligned16(workspace)) << "workspace must be 16-byte aligned";
  const WorkspaceLayout l = Layout(args.num_rows, args.num_experts, args.intermediate);
  char* base = static_cast<char*>(workspace);
  const ExpertsPath path = args.path == ExpertsPath::kAuto
                               ? ChooseExpertsPath(args.num_rows, args.num_experts, args.auto_prefill)
                               : args.path;
  const ExpertsWorkspace ws{
      .h = reinterpret_cast<__nv_bfloat16*>(base + l.h),
      .tiles = reinterpret_cast<ExpertTile*>(base + l.tiles),
      .num_tiles = reinterpret_cast<int32_t*>(base + l.num_tiles),
      .max_tiles = l.max_tiles,
      .tile_rows =
          path == ExpertsPath::kPrefillWgmma ? experts_internal::kWgmmaTileRows : kTileRows,
  };
  if (path != ExpertsPath::kDecode) {
    Launch(ScheduleKernel, 1, kScheduleThreads, 0, stream, args.expert_offsets, args.num_experts,
                                                       args.num_rows, ws);
  }
  switch (path) {
    case ExpertsPath::kDecode:
      experts_internal::LaunchDecodeExperts(args, ws, stream);
      break;
    case ExpertsPath::kPrefillWgmma:
      experts_internal::LaunchPrefillWgmmaExperts(args, ws, stream);
      break;
    case ExpertsPath::kAuto:  // resolved above
    case ExpertsPath::kPrefillWmma:
      experts_internal::LaunchPrefillExperts(args, ws, stream);
      break;
  }
}

}  // namespace moe::cuda
