// Paged attention on the GPU: KV writes by slot mapping, then attention over the paged
// cache for prefill (variable-length causal, flash-style tiles) and decode (one query per
// sequence, GQA, split over long contexts). The CPU reference is runtime/cpu/attention.h.
//
// Legend: T tokens, S sequences, H heads, KVH kv heads, hd head dim, bs block size.
// bf16 storage, fp32 accumulation and softmax.
//
// The batch must have passed ValidateStepBatch: kernels trust its block ids and positions.
// Head dims 16, 32, 64, 128 and 256; q, key and value 16-byte aligned (CHECKed).
//
//   WriteKv({.k = k, .v = v, .cache = layer}, batch, stream);
//   PagedAttention({.q = q, .cache = layer, .out = out, .num_heads = H, .scale = 1 / sqrt(hd)},
//                  batch, workspace, workspace_bytes, stream);
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/cuda/device_step_batch.h"

namespace moe::cuda {

struct PagedKvLayer {
  __nv_bfloat16* key;    // [blocks, bs, KVH, hd]
  __nv_bfloat16* value;  // [blocks, bs, KVH, hd]
  int32_t num_blocks = 0;
  int32_t block_size = 0;  // power of two
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
};

// k, v [T, KVH, hd] bf16 -> the cache at batch.slot_mapping. Writes nothing else (a slot
// outside the pool is skipped). 16-byte vectors when k, v and the cache are aligned.
struct WriteKvArgs {
  const __nv_bfloat16* k;  // [T, KVH, hd]
  const __nv_bfloat16* v;  // [T, KVH, hd]
  PagedKvLayer cache;
};
void WriteKv(const WriteKvArgs& args, const DeviceStepBatch& batch, cudaStream_t stream);

struct PagedAttentionArgs {
  const __nv_bfloat16* q;  // [T, H, hd]
  PagedKvLayer cache;
  __nv_bfloat16* out;          // [T, H, hd]
  int32_t num_heads = 0;       // H, a multiple of KVH
  float scale = 1.0f;          // usually 1/sqrt(hd)
  int32_t sliding_window = 0;  // keys within this many positions of the query; 0 = all
};

// Workspace bytes PagedAttention needs for decode steps of up to `max_decode_tokens` tokens
// (one per sequence) with contexts up to `max_context`: split-K partials, f32,
// T * H * P * (hd + 2) with P = ceil(max_context / 512) partitions; small batches, whose
// contexts are split finer to fill the GPU, take at most 4096 (token, head, partition)
// rows. Prefill steps need none. The workspace must be 16-byte
// aligned; it needs no initialization.
size_t PagedAttentionWorkspaceBytes(int32_t max_decode_tokens, int32_t num_heads,
                                    int32_t head_dim, int32_t max_context);

// q [T, H, hd] -> out [T, H, hd]: token t at batch.positions[t] of sequence s attends to
// positions [max(0, p - window + 1), p] of s through s's block table. Picks the decode
// kernel when batch.max_query_len == 1 and the prefill kernel otherwise; both handle any
// mix of sequences. `workspace` holds PagedAttentionWorkspaceBytes(...) bytes. Launch
// shapes come from the host fields of `batch` only; decode splits the context by
// batch.max_context_len but is exact for any value of it (a graph captured at one length
// stays correct, if slower, at another).
void PagedAttention(const PagedAttentionArgs& args, const DeviceStepBatch& batch, void* workspace,
                    size_t workspace_bytes, cudaStream_t stream);

}  // namespace moe::cuda
