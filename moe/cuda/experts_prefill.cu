// RunExperts, prefill path: a grouped GEMM on tensor cores (WMMA bf16 16x16x16, f32
// accumulators), one kernel for each projection.
//
// Block tile 64 rows x 128 weight rows x 32 deep, 256 threads = 8 warps as 2 (rows) x 4
// (columns), each warp 32 x 32 = 2 x 2 fragments. Grid (column blocks, tile slots): slot y
// takes tile y of the device-built list (expert, first row), or exits when y >= the
// number of tiles. Global -> shared copies are 16-byte cp.async into two stages; chunks
// outside the problem (rows past the expert, columns past I or D, k past the end) are
// zero-filled with plain stores instead. The accumulators then go through shared memory
// (reusing the stage buffers) so the epilogue can bound-check every element.
//   gate/up (kGateUp): B rows [0, 64) are gate rows j0.., B rows [64, 128) the up rows
//           I+j0..; A rows are x rows gathered through source_token; the epilogue writes
//           h[r, j0 + n] = bf16(silu(C[m, n]) * C[m, 64 + n]).
//   down:   B rows are down rows d0..d0+127; A rows are h rows; the epilogue writes ys.
#include <cstdint>

#include <cuda_pipeline.h>
#include <mma.h>

#include "moe/cuda/experts_internal.cuh"
#include "moe/cuda/kernel_util.cuh"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda::experts_internal {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kBM = kTileRows;  // A rows per tile
constexpr int kBN = 128;        // B (weight) rows per tile
constexpr int kBK = 32;         // depth per stage
constexpr int kLds = kBK + 8;   // smem row pitch in bf16: 80 bytes, 16-byte chunks spread banks
constexpr int kLdc = kBN + 4;   // epilogue row pitch in f32
constexpr int kThreads = 256;
constexpr int kChunks = kBK / 8;  // 16-byte chunks per smem row per stage

constexpr int kStageA = kBM * kLds;  // bf16 elements
constexpr int kStageB = kBN * kLds;
constexpr int kStageBytes = (kStageA + kStageB) * 2;
constexpr int kPipelineBytes = 2 * kStageBytes;
constexpr int kEpilogueBytes = kBM * kLdc * 4;
constexpr int kSmemBytes = kPipelineBytes > kEpilogueBytes ? kPipelineBytes : kEpilogueBytes;

static_assert(kThreads == kBM * kChunks, "one A chunk per thread per stage");
static_assert(kBN == 2 * kBM, "two B chunks per thread per stage");
static_assert(kBM == 2 * 32 && kBN == 4 * 32, "8 warps of 32 x 32");
static_assert(kLds % 8 == 0 && kLdc % 4 == 0, "WMMA leading dimensions");
static_assert((16 * kLds * 2) % 32 == 0 && (kStageA * 2) % 32 == 0 && kStageBytes % 32 == 0,
              "WMMA fragment pointers must be 32-byte aligned");
static_assert((16 * kLdc * 4) % 32 == 0, "WMMA store pointers must be 32-byte aligned");
static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// First column of warp column `wn`'s fragment f in the 128-wide tile. Gate/up: f = 0 is in
// the gate half and f = 1 the matching up columns, so one warp holds g and u of the same j.
template <bool kGateUp>
__device__ __forceinline__ int FragCol(int wn, int f) {
  return kGateUp ? f * (kBN / 2) + wn * 16 : wn * 32 + f * 16;
}

// Weight row feeding B row n (0..127) of the tile at column block `col0`, or null.
template <bool kGateUp>
__device__ __forceinline__ const __nv_bfloat16* WeightRow(const ExpertsArgs& a, int32_t e,
                                                          int64_t col0, int n) {
  const int64_t D = a.hidden, I = a.intermediate;
  if constexpr (kGateUp) {
    const int64_t j = col0 + n % (kBN / 2);
    if (j >= I) return nullptr;
    return a.gate_up + (e * 2 * I + (n / (kBN / 2)) * I + j) * D;  // [D]
  } else {
    const int64_t d = col0 + n;
    if (d >= D) return nullptr;
    return a.down + (e * D + d) * I;  // [I]
  }
}

template <bool kGateUp>
__device__ __forceinline__ void MmaStage(const __nv_bfloat16* a_s, const __nv_bfloat16* b_s, int wm,
                                         int wn, FragC (&acc)[2][2]) {
#pragma unroll
  for (int ks = 0; ks < kBK; ks += 16) {
    FragA a[2];
    FragB b[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      wmma::load_matrix_sync(a[i], a_s + (wm * 32 + i * 16) * kLds + ks, kLds);
      wmma::load_matrix_sync(b[i], b_s + FragCol<kGateUp>(wn, i) * kLds + ks, kLds);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int f = 0; f < 2; ++f) wmma::mma_sync(acc[i][f], a[i], b[f], acc[i][f]);
    }
  }
}

// Bound-checked epilogue from the f32 tile c [kBM, kLdc] in shared memory.
template <bool kGateUp>
__device__ __forceinline__ void StoreTile(const ExpertsArgs& a, const ExpertsWorkspace& ws,
                                          const float* c, int32_t row_begin, int32_t row_end,
                                          int64_t col0) {
  const int64_t D = a.hidden, I = a.intermediate;
  constexpr int kCols = kGateUp ? kBN / 2 : kBN;  // output columns per tile
  for (int idx = threadIdx.x; idx < kBM * kCols; idx += kThreads) {
    const int m = idx / kCols, n = idx % kCols;
    const int64_t r = row_begin + m, col = col0 + n;
    if (r >= row_end) continue;
    if constexpr (kGateUp) {
      if (col < I) {
        const float g = c[m * kLdc + n], u = c[m * kLdc + kBN / 2 + n];
        ws.h[r * I + col] = __float2bfloat16_rn(Silu(g) * u);
      }
    } else {
      if (col < D) a.ys[r * D + col] = c[m * kLdc + n];
    }
  }
}

template <bool kGateUp>
__global__ void __launch_bounds__(kThreads)
    GroupedGemmKernel(const ExpertsArgs args, const ExpertsWorkspace ws) {
  AwaitPrecedingKernels();
  __shared__ __align__(128) unsigned char smem[kSmemBytes];
  if (static_cast<int32_t>(blockIdx.y) >= *ws.num_tiles) return;  // block-uniform
  const ExpertTile tile = ws.tiles[blockIdx.y];
  const int32_t row_end =
      min(ExpertRows(args.expert_offsets, tile.expert, args.num_rows).end, tile.row_begin + kBM);
  const int64_t depth = kGateUp ? args.hidden : args.intermediate;  // K of this GEMM
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * (kGateUp ? kBN / 2 : kBN);

  // This thread's copies each stage: A row `load_row`, B rows `load_row` and +64, all at
  // 16-byte chunk `chunk` of the stage's 32-deep slice.
  const int load_row = threadIdx.x / kChunks, chunk = threadIdx.x % kChunks;
  const __nv_bfloat16* a_src = ActivationRow<kGateUp>(args, ws, tile.row_begin + load_row, row_end);
  const __nv_bfloat16* b_src0 = WeightRow<kGateUp>(args, tile.expert, col0, load_row);
  const __nv_bfloat16* b_src1 = WeightRow<kGateUp>(args, tile.expert, col0, load_row + kBM);
  auto stage_a = [&](int s) { return reinterpret_cast<__nv_bfloat16*>(smem + s * kStageBytes); };
  auto stage_b = [&](int s) { return stage_a(s) + kStageA; };
  auto load_stage = [&](int s, int64_t k0) {
    const int64_t k = k0 + chunk * 8;
    const int offset = load_row * kLds + chunk * 8;
    CopyChunk(stage_a(s) + offset, a_src, k, depth);
    CopyChunk(stage_b(s) + offset, b_src0, k, depth);
    CopyChunk(stage_b(s) + kBM * kLds + offset, b_src1, k, depth);
  };

  const int warp = threadIdx.x / kWarpSize, wm = warp / 4, wn = warp % 4;
  FragC acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int f = 0; f < 2; ++f) wmma::fill_fragment(acc[i][f], 0.0f);
  }

  // Two stages: while stage kt % 2 is multiplied, stage (kt + 1) % 2 is being filled. One
  // commit per iteration (empty at the end), so "all but the newest batch" is stage kt.
  const int num_k_tiles = static_cast<int>(CeilDiv(depth, kBK));
  load_stage(0, 0);
  __pipeline_commit();
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    if (kt + 1 < num_k_tiles) load_stage((kt + 1) % 2, static_cast<int64_t>(kt + 1) * kBK);
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();  // stage kt landed for every thread
    MmaStage<kGateUp>(stage_a(kt % 2), stage_b(kt % 2), wm, wn, acc);
    __syncthreads();  // stage kt % 2 is refilled next iteration
  }
  __pipeline_wait_prior(0);  // nothing may land in the stage buffers the epilogue reuses
  __syncthreads();

  float* c = reinterpret_cast<float*>(smem);  // [kBM, kLdc]
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int f = 0; f < 2; ++f) {
      wmma::store_matrix_sync(c + (wm * 32 + i * 16) * kLdc + FragCol<kGateUp>(wn, f), acc[i][f],
                              kLdc, wmma::mem_row_major);
    }
  }
  __syncthreads();
  StoreTile<kGateUp>(args, ws, c, tile.row_begin, row_end, col0);
}

}  // namespace

void LaunchPrefillExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws,
                          cudaStream_t stream) {
  const unsigned slots = static_cast<unsigned>(ws.max_tiles);
  const dim3 gate_up_grid(static_cast<unsigned>(CeilDiv(args.intermediate, kBN / 2)), slots);
  Launch(GroupedGemmKernel<true>, gate_up_grid, kThreads, 0, stream, args, ws);
  const dim3 down_grid(static_cast<unsigned>(CeilDiv(args.hidden, kBN)), slots);
  Launch(GroupedGemmKernel<false>, down_grid, kThreads, 0, stream, args, ws);
}

}  // namespace moe::cuda::experts_internal
