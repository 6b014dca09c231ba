// Decode attention (one query token per sequence), flash-decoding style, on CUDA cores.
//
// A block takes one sequence, one kv head and up to kGroupHeads of the query heads that
// share it (so K/V are read once per group), and one partition of the context: at most
// split.partition_keys keys (PlanDecodeSplit), the last partition taking every key left.
// It walks its keys in tiles of 64 (32 at head dim 256) staged in shared memory, with an
// online softmax in fp32.
// With one partition it writes the output; with several it writes (max, sum, unnormalized
// acc) to the workspace and DecodeReduceKernel combines them.
//
// Limitations: head dims 16..256 (templated); every sequence has at most one query token.
#include <cmath>
#include <cstdint>

#include "runtime/check.h"
#include "runtime/cuda/attention_common.cuh"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda::attention_internal {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kGroupHeads = 8;                       // query heads per block
constexpr int kHeadsPerWarp = kGroupHeads / kWarps;  // softmax rows each warp owns
constexpr int kReduceThreads = 128;

using bf16 = __nv_bfloat16;

struct DecodeParams {
  const bf16* q;                // [T, H, hd]
  const bf16* key;              // [blocks, bs, KVH, hd]
  const bf16* value;            // [blocks, bs, KVH, hd]
  bf16* out;                    // [T, H, hd], written when num_partitions == 1
  float* partial_acc;           // [T, H, P, hd], written when num_partitions > 1
  float* partial_max;           // [T, H, P]
  float* partial_sum;           // [T, H, P]
  const int32_t* positions;     // [T]
  const int32_t* query_starts;  // [S+1]
  const int32_t* block_tables;  // [S, max_blocks_per_seq]
  int32_t max_blocks_per_seq, num_heads, num_kv_heads, block_size;
  int32_t head_chunks;     // ceil((H / KVH) / kGroupHeads) blocks per kv head
  int32_t num_partitions;  // P
  int32_t partition_keys;  // keys per partition but the last, a multiple of the tile's BK
  int32_t sliding_window;
  float scale;
};

// Shared memory of one block; static, under 48 KiB for every head dim.
template <int HD>
struct DecodeSmem {
  static constexpr int BK = HD <= 128 ? 64 : 32;            // keys per tile
  static constexpr int kAcc = kGroupHeads * HD / kThreads;  // (head, dim) outputs per thread
  static_assert(kGroupHeads * HD % kThreads == 0 && BK % 32 == 0);
  static_assert(kDecodeMinPartitionKeys % BK == 0 && kGroupHeads % kWarps == 0);
  alignas(16) float q[kGroupHeads][HD];                // the block's queries
  alignas(16) bf16 k[BK][KvRowStride(HD)];             // key tile
  alignas(16) bf16 v[BK][KvRowStride(HD)];             // value tile
  float p[kGroupHeads][BK];                            // scores of the tile, then exp(score - max)
  float alpha[kGroupHeads];                            // rescale of acc for this tile
  float head_max[kGroupHeads], head_sum[kGroupHeads];  // softmax state after the last tile
};

// q . k over HD dims: q from a float row, k from a 16-byte-aligned bf16 row.
template <int HD>
__device__ __forceinline__ float DotQK(const float* q, const bf16* k) {
  float dot = 0.0f;
#pragma unroll
  for (int c = 0; c < HD; c += 8) {
    const uint4 kx = *reinterpret_cast<const uint4*>(k + c);
    const float4 qa = *reinterpret_cast<const float4*>(q + c);
    const float4 qb = *reinterpret_cast<const float4*>(q + c + 4);
    const float2 k0 = Bf16PairToFloat2(kx.x), k1 = Bf16PairToFloat2(kx.y);
    const float2 k2 = Bf16PairToFloat2(kx.z), k3 = Bf16PairToFloat2(kx.w);
    dot += qa.x * k0.x + qa.y * k0.y + qa.z * k1.x + qa.w * k1.y;
    dot += qb.x * k2.x + qb.y * k2.y + qb.z * k3.x + qb.w * k3.y;
  }
  return dot;
}

// sm.q = the num_g query heads at q [num_g, HD] as floats (rows past num_g zero).
template <int HD>
__device__ __forceinline__ void LoadQueries(const bf16* q, int num_g, DecodeSmem<HD>& sm) {
  for (int i = threadIdx.x; i < kGroupHeads * HD; i += kThreads) {
    const int g = i / HD, d = i % HD;
    sm.q[g][d] = g < num_g ? __bfloat162float(q[int64_t{g} * HD + d]) : 0.0f;
  }
}

// sm.p[g][r] = scale * q_g . k_r for the tile's n keys, -inf for padding rows.
template <int HD>
__device__ __forceinline__ void TileScores(DecodeSmem<HD>& sm, int n, int num_g, float scale) {
  constexpr int BK = DecodeSmem<HD>::BK;
  for (int i = threadIdx.x; i < kGroupHeads * BK; i += kThreads) {
    const int g = i / BK, r = i % BK;  // a warp shares g: q reads broadcast
    if (g < num_g) sm.p[g][r] = r < n ? DotQK<HD>(sm.q[g], sm.k[r]) * scale : -INFINITY;
  }
}

// Online softmax of one tile for the heads this warp owns (warp + kWarps * i): sm.p becomes
// exp(score - running max), sm.alpha the factor for what was accumulated before.
template <int HD>
__device__ __forceinline__ void TileSoftmax(DecodeSmem<HD>& sm, int n, int num_g,
                                            float (&run_max)[kHeadsPerWarp],
                                            float (&run_sum)[kHeadsPerWarp]) {
  constexpr int BK = DecodeSmem<HD>::BK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < kHeadsPerWarp; ++i) {
    const int g = warp + kWarps * i;
    if (g >= num_g) continue;  // warp-uniform
    float tile_max = -INFINITY;
    for (int r = lane; r < BK; r += 32) tile_max = fmaxf(tile_max, sm.p[g][r]);
    const float new_max = fmaxf(run_max[i], WarpMax(tile_max));
    const float ref = new_max == -INFINITY ? 0.0f : new_max;  // no inf - inf
    const float alpha = expf(run_max[i] - ref);               // 0 on the first tile
    float sum = 0.0f;
    for (int r = lane; r < BK; r += 32) {
      const float e = r < n ? expf(sm.p[g][r] - ref) : 0.0f;
      sm.p[g][r] = e;
      sum += e;
    }
    run_sum[i] = run_sum[i] * alpha + WarpSum(sum);
    run_max[i] = new_max;
    if (lane == 0) sm.alpha[g] = alpha;
  }
}

// acc = acc * alpha + p V for this thread's outputs: head i / HD, dim i % HD of
// i = threadIdx.x + j * kThreads.
template <int HD>
__device__ __forceinline__ void TileAccumulate(const DecodeSmem<HD>& sm, int n, int num_g,
                                               float (&acc)[DecodeSmem<HD>::kAcc]) {
#pragma unroll
  for (int j = 0; j < DecodeSmem<HD>::kAcc; ++j) {
    const int i = threadIdx.x + j * kThreads, g = i / HD, d = i % HD;
    if (g >= num_g) continue;
    float a = acc[j] * sm.alpha[g];
    for (int r = 0; r < n; ++r) a += sm.p[g][r] * __bfloat162float(sm.v[r][d]);
    acc[j] = a;
  }
}

// The output of token t's heads [h0, h0 + num_g) when there is one partition, else this
// partition's (acc, max, sum) for DecodeReduceKernel.
template <int HD>
__device__ __forceinline__ void WriteResult(const DecodeParams& p, const DecodeSmem<HD>& sm, int t,
                                            int h0, int num_g,
                                            const float (&acc)[DecodeSmem<HD>::kAcc]) {
#pragma unroll
  for (int j = 0; j < DecodeSmem<HD>::kAcc; ++j) {
    const int i = threadIdx.x + j * kThreads, g = i / HD, d = i % HD;
    if (g >= num_g) continue;
    const int64_t row = int64_t{t} * p.num_heads + h0 + g;  // (t, h)
    if (p.num_partitions == 1) {
      const float sum = sm.head_sum[g];  // 0 only for an empty key range
      p.out[row * HD + d] = __float2bfloat16(sum > 0.0f ? acc[j] / sum : 0.0f);
    } else {
      const int64_t slot = row * p.num_partitions + blockIdx.z;  // (t, h, partition)
      p.partial_acc[slot * HD + d] = acc[j];
      if (d == 0) p.partial_max[slot] = sm.head_max[g], p.partial_sum[slot] = sm.head_sum[g];
    }
  }
}

// grid (S, KVH * head_chunks, P), kThreads threads.
template <int HD>
__global__ void __launch_bounds__(kThreads) DecodeKernel(const DecodeParams p) {
  AwaitPrecedingKernels();
  constexpr int BK = DecodeSmem<HD>::BK;
  __shared__ DecodeSmem<HD> sm;
  const int seq = blockIdx.x;
  const int t = p.query_starts[seq];
  if (p.query_starts[seq + 1] == t) return;  // no query token this step (whole block leaves)
  const int group = p.num_heads / p.num_kv_heads;
  const int kvh = blockIdx.y / p.head_chunks;
  const int g0 = (blockIdx.y % p.head_chunks) * kGroupHeads;
  const int num_g = min(kGroupHeads, group - g0);  // query heads of this block, >= 1
  const int h0 = kvh * group + g0;
  const int pos = p.positions[t], part = blockIdx.z;
  const int key_begin = WindowStart(pos, p.sliding_window) + part * p.partition_keys;
  const int key_end =
      part + 1 == p.num_partitions ? pos + 1 : min(pos + 1, key_begin + p.partition_keys);
  const SeqKv kv{p.key,        p.value,        p.block_tables + int64_t{seq} * p.max_blocks_per_seq,
                 p.block_size, p.num_kv_heads, kvh};

  LoadQueries<HD>(p.q + (int64_t{t} * p.num_heads + h0) * HD, num_g, sm);
  float run_max[kHeadsPerWarp], run_sum[kHeadsPerWarp], acc[DecodeSmem<HD>::kAcc];
  for (int i = 0; i < kHeadsPerWarp; ++i) run_max[i] = -INFINITY, run_sum[i] = 0.0f;
  for (int j = 0; j < DecodeSmem<HD>::kAcc; ++j) acc[j] = 0.0f;
  for (int k0 = key_begin; k0 < key_end; k0 += BK) {  // block-uniform bounds
    const int n = min(BK, key_end - k0);              // keys in this tile, >= 1
    LoadKvTile<HD, BK, kThreads>(kv, k0, n, &sm.k[0][0], &sm.v[0][0]);
    __syncthreads();
    TileScores<HD>(sm, n, num_g, p.scale);
    __syncthreads();
    TileSoftmax<HD>(sm, n, num_g, run_max, run_sum);
    __syncthreads();
    TileAccumulate<HD>(sm, n, num_g, acc);
    __syncthreads();  // the next tile overwrites sm.k, sm.v, sm.p and sm.alpha
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < kHeadsPerWarp; ++i) {
    const int g = warp + kWarps * i;
    if (g < num_g && lane == 0) sm.head_max[g] = run_max[i], sm.head_sum[g] = run_sum[i];
  }
  __syncthreads();
  WriteResult<HD>(p, sm, t, h0, num_g, acc);
}

struct ReduceParams {
  const float* partial_acc;  // [T, H, P, hd]
  const float* partial_max;  // [T, H, P]; -inf for a partition without keys
  const float* partial_sum;  // [T, H, P]
  __nv_bfloat16* out;        // [T, H, hd]
  int32_t num_heads, head_dim, num_partitions;
};

// grid (T, H), kReduceThreads threads: combines the partitions of one (token, head). Each
// thread recomputes the global max and sum (a few reads of cached values) so no block-wide
// synchronization is needed.
__global__ void __launch_bounds__(kReduceThreads) DecodeReduceKernel(const ReduceParams p) {
  AwaitPrecedingKernels();
  const int64_t row = int64_t{blockIdx.x} * p.num_heads + blockIdx.y;  // (t, h)
  const int64_t first = row * p.num_partitions;                        // (t, h, 0)
  float global_max = -INFINITY;
  for (int i = 0; i < p.num_partitions; ++i)
    global_max = fmaxf(global_max, p.partial_max[first + i]);
  float total = 0.0f;
  for (int i = 0; i < p.num_partitions; ++i) {
    const float m = p.partial_max[first + i];
    if (m != -INFINITY) total += p.partial_sum[first + i] * expf(m - global_max);
  }
  for (int d = threadIdx.x; d < p.head_dim; d += kReduceThreads) {
    float o = 0.0f;
    for (int i = 0; i < p.num_partitions; ++i) {
      const float m = p.partial_max[first + i];
      if (m != -INFINITY) o += p.partial_acc[(first + i) * p.head_dim + d] * expf(m - global_max);
    }
    p.out[row * p.head_dim + d] = __float2bfloat16(total > 0.0f ? o / total : 0.0f);
  }
}

template <int HD>
void LaunchDecodeHd(const DecodeParams& params, const dim3 grid, cudaStream_t stream) {
  Launch(DecodeKernel<HD>, grid, kThreads, 0, stream, params);
}

}  // namespace

void LaunchDecode(const PagedAttentionArgs& args, const DeviceStepBatch& batch,
                  DecodeSplit split, void* workspace, cudaStream_t stream) {
  const PagedKvLayer& c = args.cache;
  CHECK(batch.max_query_len == 1) << "decode takes one query token per sequence, got up to "
                                  << batch.max_query_len;
  const int32_t num_partitions = split.partitions;
  CHECK(num_partitions >= 1 && num_partitions <= 65535) << num_partitions << " decode partitions";
  CHECK(split.partition_keys >= kDecodeMinPartitionKeys &&
        split.partition_keys % kDecodeMinPartitionKeys == 0)
      << "decode partitions of " << split.partition_keys << " keys";
  const int32_t group = args.num_heads / c.num_kv_heads;
  DecodeParams p{};
  p.q = args.q;
  p.key = c.key;
  p.value = c.value;
  p.out = args.out;
  if (num_partitions > 1) {
    const DecodeWorkspaceLayout l = MakeDecodeWorkspaceLayout(
        int64_t{batch.num_tokens} * args.num_heads * num_partitions, c.head_dim);
    char* w = static_cast<char*>(workspace);
    p.partial_acc = reinterpret_cast<float*>(w + l.acc);
    p.partial_max = reinterpret_cast<float*>(w + l.max);
    p.partial_sum = reinterpret_cast<float*>(w + l.sum);
  }
  p.positions = batch.positions;
  p.query_starts = batch.query_starts;
  p.block_tables = batch.block_tables;
  p.max_blocks_per_seq = batch.max_blocks_per_seq;
  p.num_heads = args.num_heads;
  p.num_kv_heads = c.num_kv_heads;
  p.block_size = c.block_size;
  p.head_chunks = (group + kGroupHeads - 1) / kGroupHeads;
  p.num_partitions = num_partitions;
  p.partition_keys = split.partition_keys;
  p.sliding_window = args.sliding_window;
  p.scale = args.scale;
  const dim3 grid(batch.num_seqs, c.num_kv_heads * p.head_chunks, num_partitions);
  DispatchHeadDim(c.head_dim,
                  [&](auto hd) { LaunchDecodeHd<decltype(hd)::value>(p, grid, stream); });
  if (num_partitions == 1) return;
  const ReduceParams r{p.partial_acc,  p.partial_max, p.partial_sum, args.out,
                       args.num_heads, c.head_dim,    num_partitions};
  Launch(DecodeReduceKernel, dim3(batch.num_tokens, args.num_heads), kReduceThreads, 0, stream, r);
}

}  // namespace moe::cuda::attention_internal
