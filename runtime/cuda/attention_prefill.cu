// Prefill attention (any mix of query lengths), flash-attention style with bf16 tensor cores.
//
// A block takes kRows = 64 query tokens of one sequence and one query head; each of its 4
// warps owns 16 of those rows. The block walks the keys its rows need (the union of their
// causal, windowed ranges) in tiles of BK keys read through the block table, and per tile:
//   S = Q K^T  (wmma bf16 16x16x16, fp32 accumulators, stored to shared memory)
//   online softmax of the warp's rows in fp32 (masking by each row's own key range),
//   P as bf16, O (fp32, in shared memory) rescaled, then O += P V (wmma).
// Fragments only ever move through shared memory with load/store_matrix_sync, so nothing
// depends on the unspecified mapping of fragment elements to lanes.
//
// Limitations: head dims 16..256 (templated). Needs up to ~150 KiB of shared memory at
// head dim 256 (opted in per launch). P is rounded to bf16 for the P V product, as in
// FlashAttention; its sum is kept in fp32.
#include <mma.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "runtime/check.h"
#include "runtime/cuda/attention_common.cuh"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda::attention_internal {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 16 * kWarps;  // query rows per block

// Shared memory of one block (dynamic). Row strides are padded (bank spread) and stay
// multiples of 8 bf16 / 4 floats, and every array is 128-byte aligned, as wmma requires (ldm a
// multiple of 16 bytes; fragment pointers 32-byte aligned: each fragment starts at a multiple
// of 16 rows and 16 columns).
template <int HD>
struct PrefillSmem {
  static constexpr int BK = HD <= 128 ? 64 : 32;  // keys per tile
  static constexpr int kOutStride = HD + 4;       // f32
  static constexpr int kScoreStride = BK + 4;     // f32
  static constexpr int kProbStride = BK + 8;      // bf16
  static_assert(HD % 16 == 0 && BK % 32 == 0 && KvRowStride(HD) % 8 == 0 && kProbStride % 8 == 0);
  static_assert(kOutStride % 4 == 0 && kScoreStride % 4 == 0);
  alignas(128) bf16 q[kRows][KvRowStride(HD)];  // the block's queries (zero rows past the end)
  alignas(128) bf16 k[BK][KvRowStride(HD)];     // key tile
  alignas(128) bf16 v[BK][KvRowStride(HD)];     // value tile
  alignas(128) float o[kRows][kOutStride];      // output accumulator, unnormalized
  alignas(128) float s[kRows][kScoreStride];    // scores of the tile (unscaled)
  alignas(128) bf16 p[kRows][kProbStride];      // exp(score - running max)
  int32_t pos[kRows];                           // position of each row's query; -1: no query
  int32_t first[kRows];                         // first key each row sees
};

struct PrefillParams {
  const bf16* q;                // [T, H, hd]
  const bf16* key;              // [blocks, bs, KVH, hd]
  const bf16* value;            // [blocks, bs, KVH, hd]
  bf16* out;                    // [T, H, hd]
  const int32_t* positions;     // [T]
  const int32_t* query_starts;  // [S+1]
  const int32_t* block_tables;  // [S, max_blocks_per_seq]
  int32_t max_blocks_per_seq, num_heads, num_kv_heads, block_size, sliding_window;
  float scale;
};

// Rows [0, rows) of sm.q from tokens [t, t + rows) of head h, their positions and first keys;
// the rest of the rows zero / seeing no key. Zeroes sm.o.
template <int HD>
__device__ __forceinline__ void LoadQueryTile(const PrefillParams& p, int t, int rows, int h,
                                              PrefillSmem<HD>& sm) {
  for (int i = threadIdx.x; i < kRows * (HD / 8); i += kThreads) {
    const int r = i / (HD / 8), c = (i % (HD / 8)) * 8;
    uint4 x = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      x = *reinterpret_cast<const uint4*>(p.q + (int64_t{t + r} * p.num_heads + h) * HD + c);
    }
    *reinterpret_cast<uint4*>(&sm.q[r][c]) = x;
  }
  for (int i = threadIdx.x; i < kRows * PrefillSmem<HD>::kOutStride; i += kThreads) {
    (&sm.o[0][0])[i] = 0.0f;
  }
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const int pos = r < rows ? p.positions[t + r] : -1;  // -1 with first 0: sees no key
    sm.pos[r] = pos;
    sm.first[r] = r < rows ? WindowStart(pos, p.sliding_window) : 0;
  }
}

// sm.s[16 rows of this warp][BK] = Q K^T.
template <int HD>
__device__ __forceinline__ void WarpScores(PrefillSmem<HD>& sm, int row0) {
  constexpr int BK = PrefillSmem<HD>::BK;
  for (int nt = 0; nt < BK / 16; ++nt) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
    wmma::fill_fragment(s, 0.0f);
    for (int kt = 0; kt < HD / 16; ++kt) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;  // K^T
      wmma::load_matrix_sync(a, &sm.q[row0][kt * 16], KvRowStride(HD));
      wmma::load_matrix_sync(b, &sm.k[nt * 16][kt * 16], KvRowStride(HD));
      wmma::mma_sync(s, a, b, s);
    }
    wmma::store_matrix_sync(&sm.s[row0][nt * 16], s, PrefillSmem<HD>::kScoreStride,
                            wmma::mem_row_major);
  }
}

// Online softmax of the tile of keys [k0, k0 + BK) for this warp's 16 rows, each masked to
// its own keys [first, pos]: sm.p = exp(scaled score - running max), sm.o rows rescaled.
// run_max/run_sum hold row row0 + i's state, the same in every lane.
template <int HD>
__device__ __forceinline__ void WarpSoftmax(PrefillSmem<HD>& sm, int row0, int k0, float scale,
                                            float (&run_max)[16], float (&run_sum)[16]) {
  constexpr int BK = PrefillSmem<HD>::BK;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const int r = row0 + i, first = sm.first[r], pos = sm.pos[r];
    float s[BK / 32], tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < BK / 32; ++j) {
      const int c = lane + 32 * j, key = k0 + c;
      s[j] = key >= first && key <= pos ? sm.s[r][c] * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float new_max = fmaxf(run_max[i], WarpMax(tile_max));
    const float ref = new_max == -INFINITY ? 0.0f : new_max;  // no inf - inf
    const float alpha = expf(run_max[i] - ref);               // 0 before the row's first key
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < BK / 32; ++j) {
      const float e = expf(s[j] - ref);  // 0 for masked keys
      sm.p[r][lane + 32 * j] = __float2bfloat16(e);
      sum += e;
    }
    run_sum[i] = run_sum[i] * alpha + WarpSum(sum);
    run_max[i] = new_max;
    for (int d = lane; d < HD; d += 32) sm.o[r][d] *= alpha;
  }
}

// sm.o[16 rows of this warp][HD] += P V.
template <int HD>
__device__ __forceinline__ void WarpAccumulate(PrefillSmem<HD>& sm, int row0) {
  constexpr int BK = PrefillSmem<HD>::BK, kOutStride = PrefillSmem<HD>::kOutStride;
  for (int nt = 0; nt < HD / 16; ++nt) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
    wmma::load_matrix_sync(o, &sm.o[row0][nt * 16], kOutStride, wmma::mem_row_major);
    for (int kt = 0; kt < BK / 16; ++kt) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
      wmma::load_matrix_sync(a, &sm.p[row0][kt * 16], PrefillSmem<HD>::kProbStride);
      wmma::load_matrix_sync(b, &sm.v[kt * 16][nt * 16], KvRowStride(HD));
      wmma::mma_sync(o, a, b, o);
    }
    wmma::store_matrix_sync(&sm.o[row0][nt * 16], o, kOutStride, wmma::mem_row_major);
  }
}

// grid (S, H, ceil(max_query_len / kRows)), kThreads threads, sizeof(PrefillSmem<HD>) bytes.
template <int HD>
__global__ void __launch_bounds__(kThreads) PrefillKernel(const PrefillParams p) {
  AwaitPrecedingKernels();
  constexpr int BK = PrefillSmem<HD>::BK;
  extern __shared__ __align__(128) unsigned char smem[];
  PrefillSmem<HD>& sm = *reinterpret_cast<PrefillSmem<HD>*>(smem);
  const int seq = blockIdx.x, h = blockIdx.y, q0 = blockIdx.z * kRows;
  const int t0 = p.query_starts[seq] + q0;  // token of row 0
  const int len = p.query_starts[seq + 1] - p.query_starts[seq];
  if (q0 >= len) return;  // past this sequence's query (whole block leaves)
  const int rows = min(kRows, len - q0);
  const int kvh = h / (p.num_heads / p.num_kv_heads);
  const SeqKv kv{p.key,        p.value,        p.block_tables + int64_t{seq} * p.max_blocks_per_seq,
                 p.block_size, p.num_kv_heads, kvh};

  LoadQueryTile<HD>(p, t0, rows, h, sm);
  __syncthreads();
  int kv_lo = INT_MAX, kv_hi = 0;  // keys some row of the block needs; same in every thread
  for (int r = 0; r < rows; ++r) kv_lo = min(kv_lo, sm.first[r]), kv_hi = max(kv_hi, sm.pos[r] + 1);
  const int row0 = threadIdx.x / 32 * 16;  // this warp's rows
  float run_max[16], run_sum[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) run_max[i] = -INFINITY, run_sum[i] = 0.0f;
  for (int k0 = kv_lo; k0 < kv_hi; k0 += BK) {  // block-uniform bounds
    LoadKvTile<HD, BK, kThreads>(kv, k0, min(BK, kv_hi - k0), &sm.k[0][0], &sm.v[0][0]);
    __syncthreads();
    WarpScores<HD>(sm, row0);
    __syncwarp();  // sm.s of every lane
    WarpSoftmax<HD>(sm, row0, k0, p.scale, run_max, run_sum);
    __syncwarp();  // sm.p and sm.o of every lane
    WarpAccumulate<HD>(sm, row0);
    __syncthreads();  // the next tile overwrites sm.k and sm.v; publishes sm.o
  }
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const int r = row0 + i;
    if (r >= rows) continue;
    const float inv = run_sum[i] > 0.0f ? 1.0f / run_sum[i] : 0.0f;  // 0 only for no keys
    bf16* out = p.out + (int64_t{t0 + r} * p.num_heads + h) * HD;
    for (int d = lane; d < HD; d += 32) out[d] = __float2bfloat16(sm.o[r][d] * inv);
  }
}

template <int HD>
void LaunchPrefillHd(const PrefillParams& params, const dim3 grid, cudaStream_t stream) {
  constexpr size_t kBytes = sizeof(PrefillSmem<HD>);
  int device = 0, limit = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CHECK(kBytes <= static_cast<size_t>(limit))
      << "prefill attention at head dim " << HD << " needs " << kBytes
      << " bytes of shared memory per block, the device allows " << limit;
  // Set on every launch: the attribute is per device, and setting it is cheap.
  CUDA_CHECK(cudaFuncSetAttribute(PrefillKernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kBytes)));
  Launch(PrefillKernel<HD>, grid, kThreads, kBytes, stream, params);
}

}  // namespace

void LaunchPrefill(const PagedAttentionArgs& args, const DeviceStepBatch& batch,
                   cudaStream_t stream) {
  const PagedKvLayer& c = args.cache;
  const int32_t q_tiles = (batch.max_query_len + kRows - 1) / kRows;
  CHECK(q_tiles >= 1 && q_tiles <= 65535) << "prefill of queries up to " << batch.max_query_len
                                          << " tokens: expected 1.." << 65535 * kRows;
  const PrefillParams p{args.q,
                        c.key,
                        c.value,
                        args.out,
                        batch.positions,
                        batch.query_starts,
                        batch.block_tables,
                        batch.max_blocks_per_seq,
                        args.num_heads,
                        c.num_kv_heads,
                        c.block_size,
                        args.sliding_window,
                        args.scale};
  const dim3 grid(batch.num_seqs, args.num_heads, q_tiles);
  DispatchHeadDim(c.head_dim,
                  [&](auto hd) { LaunchPrefillHd<decltype(hd)::value>(p, grid, stream); });
}

}  // namespace moe::cuda::attention_internal
