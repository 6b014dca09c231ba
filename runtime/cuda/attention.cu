// WriteKv, the workspace size, and PagedAttention's argument checks and choice of path
// (attention_decode.cu, attention_prefill.cu).
#include <cstdint>

#include "runtime/check.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/attention_common.cuh"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

using attention_internal::DecodeSplit;
using attention_internal::MakeDecodeWorkspaceLayout;
using attention_internal::MaxDecodeSplitRows;
using attention_internal::PlanDecodeSplit;

constexpr int kWriteKvThreads = 128;

// One block per token: copies its [KVH * hd] row of k and v to the cache row of its slot.
// `Chunk` is uint4 (8 bf16) when every row is 16-byte aligned, else uint16_t (one bf16).
template <typename Chunk>
__global__ void __launch_bounds__(kWriteKvThreads)
    WriteKvKernel(const Chunk* __restrict__ k,               // [T, row_chunks]
                  const Chunk* __restrict__ v,               // [T, row_chunks]
                  Chunk* __restrict__ key_cache,             // [num_slots, row_chunks]
                  Chunk* __restrict__ value_cache,           // [num_slots, row_chunks]
                  const int64_t* __restrict__ slot_mapping,  // [T]
                  int64_t num_slots, int32_t row_chunks) {
  AwaitPrecedingKernels();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  // ValidateStepBatch rejects such slots; never write outside the pool all the same.
  if (slot < 0 || slot >= num_slots) return;
  for (int32_t i = threadIdx.x; i < row_chunks; i += kWriteKvThreads) {
    key_cache[slot * row_chunks + i] = k[t * row_chunks + i];
    value_cache[slot * row_chunks + i] = v[t * row_chunks + i];
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void CheckCache(const PagedKvLayer& c) {
  CHECK(c.key != nullptr && c.value != nullptr) << "the KV cache layer has no memory";
  CHECK(c.num_blocks > 0 && c.num_kv_heads > 0 && c.head_dim > 0)
      << "KV cache layer of " << c.num_blocks << " blocks, " << c.num_kv_heads
      << " kv heads, head dim " << c.head_dim << ": expected all positive";
  CHECK(c.block_size > 0 && (c.block_size & (c.block_size - 1)) == 0)
      << "KV cache block size " << c.block_size << " is not a power of two";
}

void CheckBatch(const DeviceStepBatch& b) {
  CHECK(b.num_tokens >= 0 && b.num_seqs >= 0)
      << "step of " << b.num_tokens << " tokens and " << b.num_seqs << " sequences";
  if (b.num_tokens == 0) return;
  CHECK(b.num_seqs > 0 && b.max_blocks_per_seq > 0 && b.max_query_len > 0)
      << "step of " << b.num_tokens << " tokens has " << b.num_seqs << " sequences, "
      << b.max_blocks_per_seq << " blocks per sequence, longest query " << b.max_query_len;
  CHECK(b.positions != nullptr && b.query_starts != nullptr && b.block_tables != nullptr &&
        b.slot_mapping != nullptr)
      << "the device step batch is missing index arrays";
}

}  // namespace

void WriteKv(const WriteKvArgs& args, const DeviceStepBatch& batch, cudaStream_t stream) {
  CheckCache(args.cache);
  CheckBatch(batch);
  if (batch.num_tokens == 0) return;
  CHECK(args.k != nullptr && args.v != nullptr) << "WriteKv needs k and v";
  const PagedKvLayer& c = args.cache;
  const int64_t row = int64_t{c.num_kv_heads} * c.head_dim;  // KVH * hd elements
  const int64_t num_slots = int64_t{c.num_blocks} * c.block_size;
  const bool vectorized = row % 8 == 0 && Aligned16(args.k) && Aligned16(args.v) &&
                          Aligned16(c.key) && Aligned16(c.value);
  if (vectorized) {
    Launch(WriteKvKernel<uint4>, batch.num_tokens, kWriteKvThreads, 0, stream,
           reinterpret_cast<const uint4*>(args.k), reinterpret_cast<const uint4*>(args.v),
           reinterpret_cast<uint4*>(c.key), reinterpret_cast<uint4*>(c.value), batch.slot_mapping,
           num_slots, static_cast<int32_t>(row / 8));
  } else {
    Launch(WriteKvKernel<uint16_t>, batch.num_tokens, kWriteKvThreads, 0, stream,
           reinterpret_cast<const uint16_t*>(args.k), reinterpret_cast<const uint16_t*>(args.v),
           reinterpret_cast<uint16_t*>(c.key), reinterpret_cast<uint16_t*>(c.value),
           batch.slot_mapping, num_slots, static_cast<int32_t>(row));
  }
}

size_t PagedAttentionWorkspaceBytes(int32_t max_decode_tokens, int32_t num_heads,
                                    int32_t head_dim, int32_t max_context) {
  return MakeDecodeWorkspaceLayout(MaxDecodeSplitRows(max_decode_tokens, num_heads, max_context),
                                   head_dim)
      .bytes;
}

void PagedAttention(const PagedAttentionArgs& args, const DeviceStepBatch& batch, void* workspace,
                    size_t workspace_bytes, cudaStream_t stream) {
  const PagedKvLayer& c = args.cache;
  CheckCache(c);
  CheckBatch(batch);
  CHECK(args.num_heads > 0 && args.num_heads % c.num_kv_heads == 0 && args.num_heads <= 65535)
      << "attention with " << args.num_heads << " heads over " << c.num_kv_heads
      << " kv heads: expected a multiple of the kv heads, at most 65535";
  CHECK(args.sliding_window >= 0) << "sliding window " << args.sliding_window;
  if (batch.num_tokens == 0) return;
  CHECK(args.q != nullptr && args.out != nullptr) << "PagedAttention needs q and out";
  CHECK(Aligned16(args.q) && Aligned16(c.key) && Aligned16(c.value))
      << "attention reads q and the cache in 16-byte vectors: their addresses must be 16-byte "
         "aligned";
  if (batch.max_query_len > 1) {
    attention_internal::LaunchPrefill(args, batch, stream);
    return;
  }
  const DecodeSplit split =
      PlanDecodeSplit(batch.num_tokens, args.num_heads, batch.max_context_len, args.sliding_window);
  const int64_t rows = int64_t{batch.num_tokens} * args.num_heads * split.partitions;
  const size_t needed = split.partitions > 1 ? MakeDecodeWorkspaceLayout(rows, c.head_dim).bytes : 0;
  CHECK(workspace_bytes >= needed && (needed == 0 || workspace != nullptr))
      << "decode of " << batch.num_tokens << " tokens with contexts up to " << batch.max_context_len
      << " needs " << needed << " workspace bytes, got " << workspace_bytes;
  CHECK(needed == 0 || Aligned16(workspace)) << "the attention workspace must be 16-byte aligned";
  attention_internal::LaunchDecode(args, batch, split, workspace, stream);
}

}  // namespace moe::cuda
