// Pieces shared by the attention kernels (attention*.cu only): the head-dim dispatch, the
// paged-cache index math, bf16 unpacking, warp reductions, and the decode split-K layout.
//
// Legend: T tokens, S sequences, H heads, KVH kv heads, hd head dim, bs block size,
// P decode partitions (split-K over the context).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "runtime/check.h"
#include "runtime/cuda/attention.h"

namespace moe::cuda::attention_internal {

// Calls launch(std::integral_constant<int, hd>{}) for a supported head dim.
template <typename Launch>
void DispatchHeadDim(int32_t head_dim, Launch&& launch) {
  switch (head_dim) {
    case 16:
      return launch(std::integral_constant<int, 16>{});
    case 32:
      return launch(std::integral_constant<int, 32>{});
    case 64:
      return launch(std::integral_constant<int, 64>{});
    case 128:
      return launch(std::integral_constant<int, 128>{});
    case 256:
      return launch(std::integral_constant<int, 256>{});
    default:
      CHECK(false) << "attention head_dim " << head_dim
                   << " is not supported; expected 16, 32, 64, 128 or 256";
  }
}

// Decode splits each sequence's keys into partitions, one block each: kDecodePartitionKeys
// keys, or fewer (down to kDecodeMinPartitionKeys) when the batch is too small to fill the
// GPU otherwise: at batch 1 and a 2k context, 4 kv heads x 4 partitions of 512 keys would
// be 16 blocks for 132 SMs.
inline constexpr int32_t kDecodePartitionKeys = 512;
inline constexpr int32_t kDecodeMinPartitionKeys = 64;
// Query heads x partitions a split aims for (a block takes up to 8 heads of a kv head):
// about two blocks per SM of an H100.
inline constexpr int64_t kDecodeTargetHeadPartitions = 2048;

struct DecodeSplit {
  int32_t partitions = 1;
  int32_t partition_keys = kDecodePartitionKeys;
};

// The split of a decode step of `tokens` query tokens of `num_heads` heads whose longest
// context is `max_context_len` keys: partitions of 512 keys, halved (down to 64) while
// tokens x heads x partitions is under the target. Any split gives exact results (the last
// partition takes every key left, surplus partitions are empty), so a graph captured at
// one context length stays correct at others.
inline DecodeSplit PlanDecodeSplit(int64_t tokens, int64_t num_heads, int32_t max_context_len,
                                   int32_t sliding_window) {
  int32_t keys = max_context_len;
  if (sliding_window > 0 && sliding_window < keys) keys = sliding_window;
  auto partitions = [keys](int32_t partition_keys) {
    return keys <= partition_keys ? 1 : (keys + partition_keys - 1) / partition_keys;
  };
  DecodeSplit split;
  while (split.partition_keys > kDecodeMinPartitionKeys &&
         tokens * num_heads * partitions(split.partition_keys) < kDecodeTargetHeadPartitions) {
    split.partition_keys /= 2;
  }
  split.partitions = partitions(split.partition_keys);
  return split;
}

// The most (token, head, partition) rows any split of up to `max_tokens` tokens with
// contexts up to `max_context` keys has. A split that kept 512-key partitions has at most
// tokens x heads x ceil(max_context / 512); one that halved them did so because the rows at
// twice its partition size were under the target, and halving at most doubles them.
inline int64_t MaxDecodeSplitRows(int64_t max_tokens, int64_t num_heads, int32_t max_context) {
  const int64_t full = max_tokens * num_heads *
                       ((int64_t{max_context} + kDecodePartitionKeys - 1) / kDecodePartitionKeys);
  return full > 2 * kDecodeTargetHeadPartitions ? full : 2 * kDecodeTargetHeadPartitions;
}

inline size_t AlignUp256(size_t n) { return (n + 255) & ~size_t{255}; }

// Split-K partials in the workspace for `rows` = T * H * P (token, head, partition) rows:
// acc [T, H, P, hd] f32 (unnormalized sum of p * v), then max [T, H, P] f32 and
// sum [T, H, P] f32 of each partition's softmax. Unused when P == 1 (decode then writes the
// output directly).
struct DecodeWorkspaceLayout {
  size_t acc = 0, max = 0, sum = 0, bytes = 0;  // byte offsets, total
};

inline DecodeWorkspaceLayout MakeDecodeWorkspaceLayout(int64_t rows, int64_t head_dim) {
  DecodeWorkspaceLayout l;
  const size_t n = static_cast<size_t>(rows);
  l.acc = 0;
  l.max = AlignUp256(n * head_dim * sizeof(float));
  l.sum = l.max + AlignUp256(n * sizeof(float));
  l.bytes = l.sum + AlignUp256(n * sizeof(float));
  return l;
}

// Launchers of the two attention paths; PagedAttention (attention.cu) checks the arguments.
void LaunchDecode(const PagedAttentionArgs& args, const DeviceStepBatch& batch,
                  DecodeSplit split, void* workspace, cudaStream_t stream);
void LaunchPrefill(const PagedAttentionArgs& args, const DeviceStepBatch& batch,
                   cudaStream_t stream);

// First key position a query at `pos` sees.
__device__ __forceinline__ int32_t WindowStart(int32_t pos, int32_t sliding_window) {
  return sliding_window > 0 ? max(0, pos - sliding_window + 1) : 0;
}

// Element offset of (position `pos`, kv head `kvh`, dim 0) in a [blocks, bs, KVH, hd] cache,
// through one sequence's block table.
__device__ __forceinline__ int64_t KvOffset(const int32_t* block_table, int32_t pos,
                                            int32_t block_size, int32_t num_kv_heads,
                                            int32_t head_dim, int32_t kvh) {
  const int64_t block = block_table[pos / block_size];
  const int64_t slot = block * block_size + pos % block_size;
  return (slot * num_kv_heads + kvh) * head_dim;
}

// Shared-memory row stride (elements) of K, V and Q tiles: 16-byte loads of 8 consecutive
// rows hit distinct banks, and it stays a multiple of 8 as wmma's ldm needs.
constexpr int KvRowStride(int head_dim) { return head_dim + 8; }

// One sequence's keys and values of one kv head in the paged cache.
struct SeqKv {
  const __nv_bfloat16* key;    // [blocks, bs, KVH, hd]
  const __nv_bfloat16* value;  // [blocks, bs, KVH, hd]
  const int32_t* table;        // [max_blocks_per_seq] the sequence's block ids
  int32_t block_size, num_kv_heads, kvh;
};

// Copies the keys and values at positions [k0, k0 + n) into rows [0, n) of k_s and v_s
// ([kTileRows][KvRowStride(HD)] each) in 16-byte pieces, and zeroes rows [n, kTileRows) so a
// padding row never brings NaN into a product. Called by all kBlockThreads threads.
template <int HD, int kTileRows, int kBlockThreads>
__device__ __forceinline__ void LoadKvTile(const SeqKv& kv, int k0, int n, __nv_bfloat16* k_s,
                                           __nv_bfloat16* v_s) {
  static_assert(HD % 8 == 0);
  for (int i = threadIdx.x; i < kTileRows * (HD / 8); i += kBlockThreads) {
    const int r = i / (HD / 8), c = (i % (HD / 8)) * 8;
    uint4 kx = make_uint4(0, 0, 0, 0), vx = kx;
    if (r < n) {
      const int64_t at = KvOffset(kv.table, k0 + r, kv.block_size, kv.num_kv_heads, HD, kv.kvh) + c;
      kx = *reinterpret_cast<const uint4*>(kv.key + at);
      vx = *reinterpret_cast<const uint4*>(kv.value + at);
    }
    *reinterpret_cast<uint4*>(k_s + r * KvRowStride(HD) + c) = kx;
    *reinterpret_cast<uint4*>(v_s + r * KvRowStride(HD) + c) = vx;
  }
}

// The two bf16 of a 32-bit word (the lower address in the low half) as floats; exact.
__device__ __forceinline__ float2 Bf16PairToFloat2(uint32_t word) {
  return make_float2(__uint_as_float(word << 16), __uint_as_float(word & 0xffff0000u));
}

__device__ __forceinline__ float WarpMax(float x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

__device__ __forceinline__ float WarpSum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

}  // namespace moe::cuda::attention_internal
