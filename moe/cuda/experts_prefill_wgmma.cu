// RunExperts, prefill path on Hopper's warpgroup MMA (wgmma, sm_90a): a grouped GEMM, one
// kernel for each projection.
//
// Block tile 128 rows x 256 weight rows x 64 deep, 512 threads = 4 warpgroups as 2 (rows)
// x 2 (weight rows), each warpgroup 64 x 128 = one m64n128k16 MMA per k16 step. Grid
// (column blocks, tile slots): slot y takes tile y of the device-built list (128-row
// tiles), or exits when y >= the number of tiles.
//
// Every thread copies: 16-byte cp.async chunks into a 4-stage ring of shared tiles in the
// 128-byte swizzle the MMA reads (moe/cuda/wgmma.cuh), with chunks outside the problem
// zero-filled by plain stores. Loads run two k-tiles ahead of the MMAs:
//
//   k-tile kt:  wait for its copies -> proxy fence -> barrier -> issue copies of kt + 2
//               -> MMAs of kt (async) -> wait until the MMAs of kt - 1 are done
//
// so the stage refilled at kt, (kt + 2) % 4, was last read by the MMAs of kt - 2, which
// every warpgroup finished before the barrier. Accumulators stay in registers; the epilogue
// writes straight from them.
//   gate/up: weight rows of warpgroup column wn are gate rows j0 + 64 wn + [0, 64) then the
//            matching up rows, so a thread holds g and u of the same (row, j) and writes
//            h = bf16(silu(g) * u). A rows are x rows gathered through source_token.
//   down:    weight rows are down rows d0 + 128 wn + [0, 128); A rows are h rows; the
//            epilogue writes ys.
#include <cstdint>

#include <cuda_pipeline.h>

#include "moe/cuda/experts_internal.cuh"
#include "moe/cuda/kernel_util.cuh"
#include "moe/cuda/wgmma.cuh"
#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda::experts_internal {
namespace {

constexpr int kBM = kWgmmaTileRows;  // A rows per tile
constexpr int kBN = 256;             // weight rows per tile
constexpr int kBK = wgmma::kTileK;   // depth per stage: one 128-byte swizzled row
constexpr int kWarpgroupM = 64, kWarpgroupN = 128;
constexpr int kWarpgroups = (kBM / kWarpgroupM) * (kBN / kWarpgroupN);
constexpr int kThreads = kWarpgroups * 128;
constexpr int kStages = 4;
constexpr int kLookahead = kStages - 2;  // k-tiles in flight ahead of the MMAs
constexpr int kChunks = kBK / 8;         // 16-byte chunks per tile row

constexpr int kTileABytes = kBM * wgmma::kRowBytes;
constexpr int kTileBBytes = kBN * wgmma::kRowBytes;
constexpr int kStageBytes = kTileABytes + kTileBBytes;
constexpr int kSmemBytes = kStages * kStageBytes + wgmma::kAtomBytes;  // + slack to align

constexpr int kRowsPerPass = kThreads / kChunks;  // tile rows one pass of copies covers
constexpr int kAPasses = kBM / kRowsPerPass;
constexpr int kBPasses = kBN / kRowsPerPass;

static_assert(kWarpgroups == 4 && kBM == 2 * kWarpgroupM && kBN == 2 * kWarpgroupN);
static_assert(kBM % kRowsPerPass == 0 && kBN % kRowsPerPass == 0 && kRowsPerPass % 8 == 0,
              "a thread's rows share one swizzle phase (row % 8)");
static_assert(kTileABytes % wgmma::kAtomBytes == 0 && kTileBBytes % wgmma::kAtomBytes == 0,
              "every tile starts 1024-byte aligned");
static_assert(kSmemBytes <= 227 * 1024, "shared memory per block");
static_assert(kLookahead == 2, "the cp.async wait below assumes two k-tiles in flight");

// Weight row feeding B row n (0..255) of the tile at column block `col0`, or null.
template <bool kGateUp>
__device__ __forceinline__ const __nv_bfloat16* WeightRow(const ExpertsArgs& a, int32_t e,
                                                          int64_t col0, int n) {
  const int64_t D = a.hidden, I = a.intermediate;
  if constexpr (kGateUp) {
    // Warpgroup column wn = n / 128 reads gate rows j, then up rows I + j, for j in
    // col0 + 64 wn + [0, 64).
    const int wn = n / kWarpgroupN, within = n % kWarpgroupN;
    const int64_t half = within / (kWarpgroupN / 2);  // 0: gate, 1: up
    const int64_t j = col0 + wn * (kWarpgroupN / 2) + within % (kWarpgroupN / 2);
    if (j >= I) return nullptr;
    return a.gate_up + (e * 2 * I + half * I + j) * D;  // [D]
  } else {
    const int64_t d = col0 + n;
    if (d >= D) return nullptr;
    return a.down + (e * D + d) * I;  // [I]
  }
}

// Writes this thread's share of the warpgroup's 64 x 128 accumulator tile. Rows past the
// tile's end and columns past the output width are skipped; an output width that is a
// multiple of 8 keeps each pair of columns wholly inside or wholly outside.
template <bool kGateUp>
__device__ __forceinline__ void StoreTile(const ExpertsArgs& a, const ExpertsWorkspace& ws,
                                          const float (&acc)[64], int32_t row0, int32_t row_end,
                                          int64_t col0) {
  const int t = threadIdx.x % 128, warp = t / kWarpSize, lane = t % kWarpSize;
  const int64_t D = a.hidden, I = a.intermediate;
#pragma unroll
  for (int half = 0; half < 2; ++half) {  // rows lane/4 and lane/4 + 8 of the warp's 16
    const int64_t r = row0 + warp * 16 + lane / 4 + half * 8;
    if (r >= row_end) continue;
    if constexpr (kGateUp) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {  // n8 blocks of the gate half; the up half is j + 8
        const int64_t col = col0 + j * 8 + (lane % 4) * 2;
        if (col >= I) continue;
        const float* g = &acc[j * 4 + half * 2];
        const float* u = &acc[(j + 8) * 4 + half * 2];
        *reinterpret_cast<__nv_bfloat162*>(ws.h + r * I + col) =
            __floats2bfloat162_rn(Silu(g[0]) * u[0], Silu(g[1]) * u[1]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const int64_t col = col0 + j * 8 + (lane % 4) * 2;
        if (col >= D) continue;
        *reinterpret_cast<float2*>(a.ys + r * D + col) =
            make_float2(acc[j * 4 + half * 2], acc[j * 4 + half * 2 + 1]);
      }
    }
  }
}

template <bool kGateUp>
__global__ void __launch_bounds__(kThreads, 1)
    GroupedGemmWgmmaKernel(const ExpertsArgs args, const ExpertsWorkspace ws) {
  AwaitPrecedingKernels();
  extern __shared__ unsigned char dynamic_smem[];
  if (static_cast<int32_t>(blockIdx.y) >= *ws.num_tiles) return;  // block-uniform
  // The swizzle's phase comes from the shared address, so tiles start 1024-byte aligned.
  const uint32_t base_address = static_cast<uint32_t>(__cvta_generic_to_shared(dynamic_smem));
  unsigned char* smem =
      dynamic_smem + ((wgmma::kAtomBytes - base_address % wgmma::kAtomBytes) % wgmma::kAtomBytes);

  const ExpertTile tile = ws.tiles[blockIdx.y];
  const int32_t row_end =
      min(ExpertRows(args.expert_offsets, tile.expert, args.num_rows).end, tile.row_begin + kBM);
  const int64_t depth = kGateUp ? args.hidden : args.intermediate;  // K of this GEMM
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * (kGateUp ? kBN / 2 : kBN);

  // This thread's copies each stage: chunk `chunk` of tile rows load_row + kRowsPerPass * p.
  // All of them have the same row % 8, so the same swizzled chunk position.
  const int load_row = threadIdx.x / kChunks, chunk = threadIdx.x % kChunks;
  const __nv_bfloat16* a_src[kAPasses];
  const __nv_bfloat16* b_src[kBPasses];
#pragma unroll
  for (int p = 0; p < kAPasses; ++p) {
    a_src[p] = ActivationRow<kGateUp>(args, ws, tile.row_begin + load_row + p * kRowsPerPass,
                                      row_end);
  }
#pragma unroll
  for (int p = 0; p < kBPasses; ++p) {
    b_src[p] = WeightRow<kGateUp>(args, tile.expert, col0, load_row + p * kRowsPerPass);
  }
  const int chunk_offset = wgmma::SwizzledChunkOffset(load_row, chunk);
  auto tile_a = [&](int s) { return smem + s * kStageBytes; };
  auto tile_b = [&](int s) { return smem + s * kStageBytes + kTileABytes; };
  auto load_stage = [&](int kt) {
    const int s = kt % kStages;
    const int64_t k = static_cast<int64_t>(kt) * kBK + chunk * 8;
#pragma unroll
    for (int p = 0; p < kAPasses; ++p) {
      CopyChunk(tile_a(s) + p * kRowsPerPass * wgmma::kRowBytes + chunk_offset, a_src[p], k,
                depth);
    }
#pragma unroll
    for (int p = 0; p < kBPasses; ++p) {
      CopyChunk(tile_b(s) + p * kRowsPerPass * wgmma::kRowBytes + chunk_offset, b_src[p], k,
                depth);
    }
  };

  // Warpgroup (wm, wn) multiplies A rows 64 wm.. against B rows 128 wn... A warpgroup
  // whose rows all lie past the expert's end (a short last tile) multiplies zeros: skipping
  // its MMAs behind a branch makes ptxas serialize every wgmma in the kernel (C7518).
  const int warpgroup = threadIdx.x / 128, wm = warpgroup / 2, wn = warpgroup % 2;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  const int num_k_tiles = static_cast<int>(CeilDiv(depth, kBK));
  for (int kt = 0; kt < kLookahead; ++kt) {
    if (kt < num_k_tiles) load_stage(kt);
    __pipeline_commit();
  }
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    // Copy groups committed so far: kLookahead + kt; k-tile kt's is the oldest but
    // kLookahead - 1 of them.
    __pipeline_wait_prior(kLookahead - 1);
    wgmma::FenceProxyAsync();
    __syncthreads();  // k-tile kt is in shared memory, and the MMAs of kt - 2 are done
    if (kt + kLookahead < num_k_tiles) load_stage(kt + kLookahead);
    __pipeline_commit();

    const int s = kt % kStages;
    const unsigned char* a = tile_a(s) + wm * kWarpgroupM * wgmma::kRowBytes;
    const unsigned char* b = tile_b(s) + wn * kWarpgroupN * wgmma::kRowBytes;
    wgmma::FenceOperands(acc);
    wgmma::Fence();
#pragma unroll
    for (int k16 = 0; k16 < kBK / 16; ++k16) {
      wgmma::MmaM64N128K16(acc, wgmma::SmemDescriptor(a + k16 * 32),
                           wgmma::SmemDescriptor(b + k16 * 32), /*accumulate=*/true);
    }
    wgmma::Commit();
    wgmma::Wait<1>();  // the MMAs of kt - 1 are done
    wgmma::FenceOperands(acc);
  }
  wgmma::Wait<0>();
  wgmma::FenceOperands(acc);
  __pipeline_wait_prior(0);  // no copy may still be in flight when the block exits

  const int64_t out_col0 = col0 + wn * (kGateUp ? kWarpgroupN / 2 : kWarpgroupN);
  StoreTile<kGateUp>(args, ws, acc, tile.row_begin + wm * kWarpgroupM, row_end, out_col0);
}

}  // namespace

void LaunchPrefillWgmmaExperts(const ExpertsArgs& args, const ExpertsWorkspace& ws,
                               cudaStream_t stream) {
  int device = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CHECK(major == 9) << "the wgmma prefill path runs on Hopper (sm_90a) only; this device is sm_"
                    << major << "x";
  // Set on every launch: the attribute is per device, and setting it is cheap.
  CUDA_CHECK(cudaFuncSetAttribute(GroupedGemmWgmmaKernel<true>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  CUDA_CHECK(cudaFuncSetAttribute(GroupedGemmWgmmaKernel<false>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  const unsigned slots = static_cast<unsigned>(ws.max_tiles);
  const dim3 gate_up_grid(static_cast<unsigned>(CeilDiv(args.intermediate, kBN / 2)), slots);
  Launch(GroupedGemmWgmmaKernel<true>, gate_up_grid, kThreads, kSmemBytes, stream, args, ws);
  const dim3 down_grid(static_cast<unsigned>(CeilDiv(args.hidden, kBN)), slots);
  Launch(GroupedGemmWgmmaKernel<false>, down_grid, kThreads, kSmemBytes, stream, args, ws);
}

}  // namespace moe::cuda::experts_internal
