// RunExperts, decode path: weight streaming for experts that hold a few rows each.
//
// Grid (column blocks, active-expert slots); block = 8 warps; warp w of block (x, s) owns
// output column x*8 + w of the s-th expert that has rows (ascending; each warp finds it in
// the offsets, so no schedule kernel runs) and streams that column's weight row(s) once
// per pass, 16 bytes per lane per step, against up to kPassRows of the expert's rows
// (more rows take more passes, re-reading the weight row from cache).
//   gate/up: column j reads gate row j and up row I+j together, so h = silu(g) * u is
//            finished in registers and stored as bf16.
//   down:    column d reads down row d against the h rows from the workspace.
// No shared memory and no barriers: a warp whose column is out of range returns at once.
#include <algorithm>
#include <cstdint>

#include "moe/cuda/experts_internal.cuh"
#include "moe/cuda/kernel_util.cuh"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda::experts_internal {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kPassRows = 8;                // expert rows per pass over a weight row
constexpr int kLaneStride = kWarpSize * 8;  // elements a warp covers per 16-byte step

// The slot-th expert, in ascending order, that has rows (-1 if fewer experts have rows), and
// its rows. Warp-collective. Lane l counts the experts with rows in [l*c, l*c + c),
// c = ceil(E / 32); a scan over the lanes finds the lane that holds the slot.
struct ActiveExpert {
  int32_t expert;
  RowRange rows;
};
__device__ __forceinline__ ActiveExpert FindActiveExpert(const int32_t* offsets, int32_t num_experts,
                                                         int32_t num_rows, int32_t slot) {
  const int lane = threadIdx.x % kWarpSize;
  const int32_t per_lane = (num_experts + kWarpSize - 1) / kWarpSize;
  const int32_t first = min(lane * per_lane, num_experts), last = min(first + per_lane, num_experts);
  auto has_rows = [&](int32_t e) {
    const RowRange r = ExpertRows(offsets, e, num_rows);
    return r.end > r.begin;
  };
  int32_t mine = 0;
  for (int32_t e = first; e < last; ++e) mine += has_rows(e) ? 1 : 0;
  int32_t inclusive = mine;  // experts with rows in lanes 0..lane
#pragma unroll
  for (int d = 1; d < kWarpSize; d *= 2) {
    const int32_t below = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += below;
  }
  int32_t expert = -1;
  if (slot >= inclusive - mine && slot < inclusive) {
    int32_t skip = slot - (inclusive - mine);
    for (int32_t e = first; e < last && expert < 0; ++e) {
      if (has_rows(e) && skip-- == 0) expert = e;
    }
  }
  const uint32_t holder = __ballot_sync(0xffffffffu, expert >= 0);  // one lane, or none
  if (holder == 0) return {-1, {0, 0}};
  expert = __shfl_sync(0xffffffffu, expert, __ffs(static_cast<int>(holder)) - 1);
  return {expert, ExpertRows(offsets, expert, num_rows)};
}

// h[r, j] = silu(x[tok(r)] . gate[e][j]) * (x[tok(r)] . up[e][j]) for the rows r of e.
__global__ void __launch_bounds__(kThreads)
    DecodeGateUpKernel(const ExpertsArgs args, const ExpertsWorkspace ws) {
  AwaitPrecedingKernels();
  const int64_t D = args.hidden, I = args.intermediate;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  if (j >= I) return;  // warp-uniform
  const auto [e, rows] = FindActiveExpert(args.expert_offsets, args.num_experts, args.num_rows,
                                          static_cast<int32_t>(blockIdx.y));
  if (e < 0) return;  // warp-uniform
  const int lane = threadIdx.x % kWarpSize;
  const __nv_bfloat16* gate_row = args.gate_up + (e * 2 * I + j) * D;  // [D]
  const __nv_bfloat16* up_row = gate_row + I * D;                      // [D]

  for (int32_t r0 = rows.begin; r0 < rows.end; r0 += kPassRows) {
    const int32_t n = min(kPassRows, rows.end - r0);  // warp-uniform
    const __nv_bfloat16* x_row[kPassRows];  // [D] each; null: past the expert or bad token
#pragma unroll
    for (int m = 0; m < kPassRows; ++m) {
      x_row[m] = nullptr;
      if (m < n) {
        const int32_t token = args.source_token[r0 + m];
        if (token >= 0 && token < args.num_tokens) x_row[m] = args.x + token * D;
      }
    }
    float gate[kPassRows] = {}, up[kPassRows] = {};
    for (int64_t k = lane * 8; k < D; k += kLaneStride) {
      const Bf16x8 g = LoadBf16x8(gate_row + k), u = LoadBf16x8(up_row + k);
#pragma unroll
      for (int m = 0; m < kPassRows; ++m) {
        if (x_row[m] == nullptr) continue;
        const Bf16x8 xv = LoadBf16x8(x_row[m] + k);
        gate[m] = Dot8(g, xv, gate[m]);
        up[m] = Dot8(u, xv, up[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < kPassRows; ++m) {
      if (m >= n) break;  // warp-uniform, so every lane joins each WarpSum
      const float g_sum = WarpSum(gate[m]), u_sum = WarpSum(up[m]);
      if (lane == 0) ws.h[(r0 + m) * I + j] = __float2bfloat16_rn(Silu(g_sum) * u_sum);
    }
  }
}

// ys[r, d] = h[r] . down[e][d] for the rows r of e.
__global__ void __launch_bounds__(kThreads)
    DecodeDownKernel(const ExpertsArgs args, const ExpertsWorkspace ws) {
  AwaitPrecedingKernels();
  const int64_t D = args.hidden, I = args.intermediate;
  const int64_t d = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  if (d >= D) return;  // warp-uniform
  const auto [e, rows] = FindActiveExpert(args.expert_offsets, args.num_experts, args.num_rows,
                                          static_cast<int32_t>(blockIdx.y));
  if (e < 0) return;  // warp-uniform
  const int lane = threadIdx.x % kWarpSize;
  const __nv_bfloat16* down_row = args.down + (e * D + d) * I;  // [I]

  for (int32_t r0 = rows.begin; r0 < rows.end; r0 += kPassRows) {
    const int32_t n = min(kPassRows, rows.end - r0);  // warp-uniform
    float acc[kPassRows] = {};
    for (int64_t k = lane * 8; k < I; k += kLaneStride) {
      const Bf16x8 w = LoadBf16x8(down_row + k);
#pragma unroll
      for (int m = 0; m < kPassRows; ++m) {
        if (m < n) acc[m] = Dot8(w, LoadBf16x8(ws.h + (r0 + m) * I + k), acc[m]);
      }
    }
#pragma unroll
    for (int m = 0; m < kPassRows; ++m) {
      if (m >= n) break;  // warp-uniform
      const float sum = WarpSum(acc[m]);
      if (lane == 0) args.ys[(r0 + m) * D + d] = sum;
    }
  }
}

}  // namespace

void LaunchDecodeExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws, cudaStream_t stream) {
  // At most min(N, E) experts have rows; blocks past the ones that do return at once.
  const unsigned slots = static_cast<unsigned>(std::min(args.num_rows, args.num_experts));
  const dim3 gate_up_grid(static_cast<unsigned>(CeilDiv(args.intermediate, kWarps)), slots);
  Launch(DecodeGateUpKernel, gate_up_grid, kThreads, 0, stream, args, ws);
  const dim3 down_grid(static_cast<unsigned>(CeilDiv(args.hidden, kWarps)), slots);
  Launch(DecodeDownKernel, down_grid, kThreads, 0, stream, args, ws);
}

}  // namespace moe::cuda::experts_internal
